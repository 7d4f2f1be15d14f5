"""Backend-neutral result types and the read protocol every vector store offers (numpy only)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "AddResult",
    "ModalityHits",
    "VectorStore",
    "as_query_matrix",
]


@dataclass
class ModalityHits:
    """One modality's answer for a batch of ``Q`` queries.

    Row ``q`` holds ``k_q <= k`` hits, best first. ``scores`` is always ``[Q, k]`` for the ``k``
    that was asked for, so ``scores[:, 0]`` is every query's top-1 even when a row is short;
    the missing tail of a row is ``-inf`` (and zeros in ``embeddings``).

    Attributes:
        modality: the modality label these hits come from.
        ids: ``[Q][k_q]`` item ids.
        scores: ``[Q, k]`` float32 cosine similarity, padded with ``-inf``.
        documents: ``[Q][k_q]`` stored text (``None`` where there is none).
        uris: ``[Q][k_q]`` stored URI (``None`` where there is none).
        metadatas: ``[Q][k_q]`` metadata dicts (``{}`` where there is none).
        embeddings: ``[Q, k, d]`` float32 hit embeddings when asked for, else ``None``.
    """

    modality: str
    ids: list[list[str]]
    scores: np.ndarray
    documents: list[list[str | None]]
    uris: list[list[str | None]]
    metadatas: list[list[dict]]
    embeddings: np.ndarray | None = None

    @property
    def n_queries(self) -> int:
        """Number of query rows ``Q``."""
        return len(self.ids)

    @property
    def k(self) -> int:
        """Width of ``scores`` (the ``k`` that was asked for)."""
        return int(self.scores.shape[1])

    def row_lengths(self) -> list[int]:
        """``k_q`` for each query row: how many real hits it has."""
        return [len(r) for r in self.ids]

    @classmethod
    def empty(cls, modality: str, n_queries: int, k: int, dim: int | None = None) -> ModalityHits:
        """Hits with no item in any row (an empty modality); embeddings only if ``dim`` is given."""
        return cls(
            modality=modality,
            ids=[[] for _ in range(n_queries)],
            scores=np.full((n_queries, k), -np.inf, dtype=np.float32),
            documents=[[] for _ in range(n_queries)],
            uris=[[] for _ in range(n_queries)],
            metadatas=[[] for _ in range(n_queries)],
            embeddings=None if dim is None else np.zeros((n_queries, k, dim), dtype=np.float32),
        )


@dataclass
class AddResult:
    """What an idempotent ``add`` did: ids written, and ids skipped with the reason."""

    added: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def as_query_matrix(embeddings: Any, *, dim: int | None = None, what: str = "query") -> np.ndarray:
    """Return ``embeddings`` as a C-contiguous float32 ``[Q, d]`` matrix or raise ``ValueError``.

    A single vector ``[d]`` becomes ``[1, d]``. Rejects empty dimension, NaN/inf, and a width other
    than ``dim`` when ``dim`` is given.
    """
    arr = np.asarray(embeddings, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{what} embeddings must be a [n, d] matrix, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{what} embeddings have dimension 0")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(
            f"{what} embeddings have dimension {arr.shape[1]} but the store holds dimension {dim}"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{what} embeddings contain NaN or inf (row {int(np.flatnonzero(bad)[0])})"
        )
    return np.ascontiguousarray(arr)


@runtime_checkable
class VectorStore(Protocol):
    """The read API the mmgap core needs from a store of per-modality embeddings."""

    def modalities(self) -> list[str]:
        """Modality labels present in the store."""
        ...

    def count(self, modality: str) -> int:
        """Number of items of ``modality``."""
        ...

    def counts(self) -> dict[str, int]:
        """Item count for every modality."""
        ...

    def query(
        self,
        modality: str,
        embeddings: np.ndarray,
        k: int,
        *,
        where: Mapping[str, Any] | None = None,
        include_embeddings: bool = False,
    ) -> ModalityHits:
        """Top-``k`` cosine hits in one modality for each query row."""
        ...

    def query_modalities(
        self,
        embeddings: np.ndarray,
        k_per_modality: int | Mapping[str, int],
        *,
        where: Mapping[str, Any] | None = None,
        modalities: Sequence[str] | None = None,
        include_embeddings: bool = False,
    ) -> dict[str, ModalityHits]:
        """``query`` for several modalities at once."""
        ...

    def iter_embeddings(
        self, modality: str, batch_size: int = 4096
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(ids, embeddings [b, d] float32)`` over every item of ``modality``."""
        ...

    def sample_documents(
        self, modality: str, n: int, seed: int = 0
    ) -> tuple[list[str], list[str | None], np.ndarray]:
        """A reproducible random sample ``(ids, documents, embeddings)`` of ``modality``."""
        ...

    @property
    def dim(self) -> int | None:
        """Embedding dimension, or ``None`` when the store is empty/unknown."""
        ...

    @property
    def model_id(self) -> str | None:
        """Embedding model id the store was built with, or ``None`` if unknown."""
        ...

    def load_calibration(self) -> dict | None:
        """Stored calibration data, or ``None``."""
        ...
