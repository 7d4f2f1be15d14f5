"""The encoder contract of mmgap (numpy only).

Any model can feed mmgap by implementing :class:`Encoder`: two batch methods that turn texts or images
into L2-normalised float32 rows and report, per input position, why an item could not be embedded.
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
    "EmbeddingSet",
    "Encoder",
    "ImageInput",
    "MODALITIES",
    "WeightsUnavailableError",
    "encoder_spec",
]

#: The two modalities an :class:`EmbeddingSet` can hold.
MODALITIES = ("text", "image")

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
                f"EmbeddingSet: positions {sorted(overlap)[:5]} are both embedded and listed as failures"
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
        """One query text -> ``[dim]`` float32 unit vector; ``ValueError`` naming the reason if not."""
        ...

    def embed_query_image(self, image: ImageInput) -> np.ndarray:
        """One query image -> ``[dim]`` float32 unit vector; ``ValueError`` naming the reason if not."""
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
