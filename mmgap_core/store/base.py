"""Backend-neutral result types and the protocols of a vector store (numpy only)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "AddResult",
    "ModalityHits",
    "VectorStore",
    "WritableVectorStore",
]


@dataclass
class ModalityHits:
    """One modality's answer for a batch of ``Q`` queries.

    Row ``q`` holds ``k_q <= k`` hits, best first. ``scores`` is always ``[Q, k]`` for the ``k``
    that was asked for, so ``scores[:, 0]`` is every query's top-1 even when a row is short;
    the missing tail of a row is ``-inf`` (and zeros in ``embeddings``).

    Attributes
    ----------
    modality : str
        The modality label these hits come from.
    ids : list of list of str
        ``[Q][k_q]`` item ids.
    scores : numpy.ndarray
        ``[Q, k]`` float32 cosine similarity, padded with ``-inf``.
    documents : list of list of str or None
        ``[Q][k_q]`` stored text (``None`` where there is none).
    uris : list of list of str or None
        ``[Q][k_q]`` stored URI (``None`` where there is none).
    metadatas : list of list of dict
        ``[Q][k_q]`` metadata dicts (``{}`` where there is none).
    embeddings : numpy.ndarray or None
        ``[Q, k, d]`` float32 hit embeddings when asked for, else ``None``.
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


@runtime_checkable
class VectorStore(Protocol):
    """What the mmgap core asks of a store of per-modality embeddings.

    Every store offers this: mmgap's own layout and the read-only views of collections that other
    libraries wrote. Stores the engine can index into also offer :class:`WritableVectorStore`.
    """

    @property
    def dim(self) -> int | None:
        """Embedding dimension, or ``None`` when the store is empty/unknown."""
        ...

    @property
    def model_id(self) -> str | None:
        """Embedding model id the store was built with, or ``None`` if unknown."""
        ...

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

    def query_per_modality(
        self,
        embeddings: np.ndarray,
        k_per_modality: int | Mapping[str, int],
        *,
        where: Mapping[str, Any] | None = None,
        modalities: Sequence[str] | None = None,
        include_embeddings: bool = False,
    ) -> dict[str, ModalityHits]:
        """:meth:`query` for several modalities at once (one ``k``, or a ``{modality: k}`` dict)."""
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

    def load_calibration(self) -> dict | None:
        """Stored calibration data (a JSON-safe dict), or ``None``."""
        ...

    def save_calibration(self, data: Mapping[str, Any]) -> None:
        """Store calibration data (a JSON-safe dict) with the store."""
        ...


@runtime_checkable
class WritableVectorStore(VectorStore, Protocol):
    """A :class:`VectorStore` the engine can index into, with a manifest of store-level facts."""

    def existing_ids(self, modality: str, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` already stored in ``modality``."""
        ...

    def add(
        self,
        modality: str,
        ids: Sequence[str],
        embeddings: Any,
        *,
        documents: Sequence[str | None] | None = None,
        uris: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        model_id: str | None = None,
    ) -> AddResult:
        """Add items to ``modality``; ids already present are skipped, never overwritten."""
        ...

    def read_manifest(self) -> dict[str, Any]:
        """Store-level data (``model_id``, ``dim``, ``encoder``, ...)."""
        ...

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the manifest (``None`` deletes a key) and return the result."""
        ...
