"""The encoder contract of mmgap (numpy only).

Any model can feed mmgap by implementing :class:`Encoder`: two batch methods that turn texts or
images into L2-normalised float32 rows and report, per input position, why an item could not be
embedded. :func:`mix_document_vectors` makes a multimodal document's vector from both.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Union, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_DOCUMENT_ALPHA",
    "DOCUMENT_MODALITY",
    "EmbeddingSet",
    "Encoder",
    "ImageInput",
    "MODALITIES",
    "WeightsUnavailableError",
    "check_alpha",
    "encoder_spec",
    "mix_document_vectors",
]

#: The two modalities an :class:`EmbeddingSet` can hold.
MODALITIES = ("text", "image")

#: The modality label of a document made of a text and an image (GR-CLIP's MixBench kind).
DOCUMENT_MODALITY = "multimodal"
#: The text's default weight in a multimodal document's vector (GR-CLIP uses 0.5).
DEFAULT_DOCUMENT_ALPHA = 0.5

#: What ``embed_images`` accepts per item: a file path, an in-memory PIL image or encoded bytes.
ImageInput = Union[str, os.PathLike, "Image.Image", bytes]


class WeightsUnavailableError(RuntimeError):
    """Model weights (or tokenizer files) could not be obtained.

    Raised instead of silently falling back to other weights, e.g. when offline mode
    (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``) is set and the weights are not cached, or when a
    download fails. Defined here so callers can catch it without importing torch.
    """


@dataclass
class EmbeddingSet:
    """Vectors produced by one encoder for one modality, plus what was skipped.

    Attributes
    ----------
    vectors : numpy.ndarray
        ``[n_ok, dim]`` float32, one L2-normalised row per embedded item.
    model_id : str
        Identity of the encoder + weights that produced the rows.
    modality : str
        ``"text"`` or ``"image"``.
    indices : numpy.ndarray
        int64 positions (in the caller's input sequence) that produced the rows, in order.
    failures : dict of int to str
        Input position -> human-readable reason that item was skipped.
    """

    vectors: np.ndarray
    model_id: str
    modality: str
    indices: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        vectors = np.asarray(self.vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(
                f"EmbeddingSet.vectors: expected a 2-D array, got shape {vectors.shape}"
            )
        indices = np.asarray(self.indices, dtype=np.int64)
        if indices.ndim != 1 or indices.shape[0] != vectors.shape[0]:
            raise ValueError(
                f"EmbeddingSet.indices: expected {vectors.shape[0]} positions (one per row), "
                f"got shape {indices.shape}"
            )
        if self.modality not in MODALITIES:
            raise ValueError(
                f"EmbeddingSet.modality: expected one of {MODALITIES}, got {self.modality!r}"
            )
        if not isinstance(self.model_id, str) or not self.model_id:
            raise ValueError(
                f"EmbeddingSet.model_id: expected a non-empty str, got {self.model_id!r}"
            )
        overlap = set(self.failures).intersection(indices.tolist())
        if overlap:
            raise ValueError(
                f"EmbeddingSet: positions {sorted(overlap)[:5]} are both embedded and listed as "
                "failures"
            )
        self.vectors = vectors
        self.indices = indices
        self.failures = {int(k): str(v) for k, v in self.failures.items()}

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if dtype is None or np.dtype(dtype) == self.vectors.dtype:
            return self.vectors.copy() if copy else self.vectors
        if copy is False:
            raise ValueError(f"EmbeddingSet: converting float32 vectors to {dtype} needs a copy")
        return self.vectors.astype(dtype)

    @property
    def dim(self) -> int:
        """Embedding width (number of columns)."""
        return int(self.vectors.shape[1])


@runtime_checkable
class Encoder(Protocol):
    """What mmgap needs from an embedding model.

    Implementations return L2-normalised float32 rows in an :class:`EmbeddingSet`. An item that
    cannot be embedded (empty text, unreadable image, ...) is left out and recorded in
    ``failures`` with a reason, unless ``strict=True``, in which case ``ValueError`` is raised.
    The engine indexes with the batch methods and searches with the query methods. An encoder
    that can be rebuilt later (by :func:`mmgap_core.factory.open_engine`) also offers ``spec()``,
    see :func:`encoder_spec`.

    Attributes
    ----------
    model_id : str
        Identity of the model and its weights; a store refuses vectors of another model.
    dim : int
        Embedding width.
    """

    model_id: str
    dim: int

    def embed_texts(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        progress: bool = False,
        strict: bool = False,
    ) -> EmbeddingSet:
        """Embed texts (one row per embeddable item)."""
        ...

    def embed_images(
        self,
        images: Sequence[ImageInput],
        *,
        batch_size: int | None = None,
        progress: bool = False,
        strict: bool = False,
    ) -> EmbeddingSet:
        """Embed images given as paths, PIL images or encoded bytes."""
        ...

    def embed_query_text(self, text: str) -> np.ndarray:
        """One query text -> ``[dim]`` float32 unit vector; ``ValueError`` with reason if not."""
        ...

    def embed_query_image(self, image: ImageInput) -> np.ndarray:
        """One query image -> ``[dim]`` float32 unit vector; ``ValueError`` with reason if not."""
        ...


def encoder_spec(encoder: object) -> dict | None:
    """How to rebuild ``encoder`` later, as the encoder describes itself, or ``None``.

    Parameters
    ----------
    encoder : object
        Any encoder. One that can be rebuilt offers ``spec()``, returning a JSON-safe dict such as
        ``{"kind": "open_clip", "model_name": ..., "pretrained": ..., "model_config": ...}``.

    Returns
    -------
    dict or None
        ``encoder.spec()``, or ``None`` when the encoder has no ``spec`` or returns ``None``.
    """
    spec = getattr(encoder, "spec", None)
    if not callable(spec):
        return None
    value = spec()
    return None if value is None else dict(value)


def check_alpha(alpha: object) -> float:
    """Return ``alpha`` as a float if it is a valid text weight of a multimodal document.

    Parameters
    ----------
    alpha : object
        The text's weight, a finite number in ``[0, 1]`` (the image gets ``1 - alpha``).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        For anything else (a bool, NaN, a number outside ``[0, 1]``).
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    value = float(alpha)
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return value


def mix_document_vectors(
    text_vectors: np.ndarray, image_vectors: np.ndarray, alpha: float = DEFAULT_DOCUMENT_ALPHA
) -> tuple[np.ndarray, np.ndarray]:
    """Multimodal document vectors: ``normalise(alpha * unit(t) + (1 - alpha) * unit(v))``.

    Parameters
    ----------
    text_vectors, image_vectors : numpy.ndarray
        ``[n, d]`` embeddings of each document's text and image, row for row.
    alpha : float, default 0.5
        The text's weight (see :func:`check_alpha`).

    Returns
    -------
    vectors : numpy.ndarray
        ``[n_ok, d]`` float32 unit rows, for the documents whose mixed vector is not (numerically)
        zero.
    ok : numpy.ndarray
        ``[n]`` bool, which documents those rows belong to (a text and an image pointing in
        opposite directions cancel out with ``alpha`` 0.5).
    """
    alpha = check_alpha(alpha)
    t = np.asarray(text_vectors, dtype=np.float64)
    v = np.asarray(image_vectors, dtype=np.float64)
    if t.shape != v.shape or t.ndim != 2:
        raise ValueError(f"text vectors {t.shape} and image vectors {v.shape} must both be [n, d]")
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    mixed = alpha * t + (1.0 - alpha) * v
    norm = np.linalg.norm(mixed, axis=1)
    ok = norm > 1e-6
    return (mixed[ok] / norm[ok, None]).astype(np.float32), ok
