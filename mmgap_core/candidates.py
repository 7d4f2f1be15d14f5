"""Candidate lists: what fusion ranks, built from exact top-k search or from a store's answer.

One type for "each query's candidates per modality": :class:`CandidateBatch`, with constructors
from mining output (:meth:`CandidateBatch.from_topk`) and from store hits
(:meth:`CandidateBatch.from_hits`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .mining import ModalityTopK
    from .store.base import ModalityHits

__all__ = ["CandidateBatch", "ModalityCandidates", "full_ids"]

# Shared id tables of full rows, by shape (small shapes only: a search's lists).
_FULL_IDS: dict[tuple[int, int], np.ndarray] = {}
_FULL_IDS_MAX_SIZE = 1 << 16


def full_ids(n_queries: int, k: int) -> np.ndarray:
    """``[Q, k]`` int64 ids ``0..k-1`` in every row: the ids of full candidate rows.

    The table is read-only and, for small shapes, shared: lists holding it are known to be full
    (:attr:`ModalityCandidates.is_full`) without a pass over their ids.
    """
    ids = _FULL_IDS.get((n_queries, k))
    if ids is None:
        ids = np.tile(np.arange(k, dtype=np.int64), (n_queries, 1))
        ids.setflags(write=False)
        if n_queries * k <= _FULL_IDS_MAX_SIZE:
            if len(_FULL_IDS) >= 64:  # bounded: a process sees a few shapes
                _FULL_IDS.clear()
            _FULL_IDS[(n_queries, k)] = ids
    return ids


@dataclass
class ModalityCandidates:
    """One modality's candidates for a batch of queries, best first within each row.

    Attributes
    ----------
    ids : numpy.ndarray
        ``[Q, k]`` int64 candidate ids; -1 marks "no candidate" (the scores there are ignored).
    scores : numpy.ndarray
        ``[Q, k]`` float64 raw cosines.
    """

    ids: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.ids.ndim != 2 or self.ids.shape != self.scores.shape:
            raise ValueError(
                f"candidate ids {self.ids.shape} and scores {self.scores.shape} must both be [Q, k]"
            )
        # One pass when every score is finite (count_nonzero: cheaper than a ufunc reduction).
        if np.count_nonzero(np.isfinite(self.scores)) != self.scores.size:
            if not np.isfinite(self.scores[self.ids >= 0]).all():
                raise ValueError("candidate scores contain NaN or inf")

    @property
    def valid(self) -> np.ndarray:
        """``[Q, k]`` bool: where a real candidate is."""
        return self.ids >= 0

    @property
    def ids_are_ranks(self) -> bool:
        """Whether the ids are the shared table of :func:`full_ids`: id ``j`` is list rank ``j``."""
        return _FULL_IDS.get(self.ids.shape) is self.ids

    @property
    def is_full(self) -> bool:
        """Whether every entry is a real candidate (no -1 padding)."""
        # The shared table of full rows needs no pass over the ids (a search's lists).
        return self.ids_are_ranks or bool((self.ids >= 0).all())


@dataclass
class CandidateBatch:
    """Per-modality candidate lists for ``Q`` queries of one query modality.

    Build one from exact top-k search with :meth:`from_topk`, or from a store's answer with
    :meth:`from_hits`.

    Attributes
    ----------
    query_modality : str
        The modality of the ``Q`` queries.
    lists : dict of str to ModalityCandidates
        Each candidate modality's ``[Q, k]`` lists.
    query_embeddings : numpy.ndarray, optional
        ``[Q, d]``; only methods that re-score in embedding space (``needs_candidate_embeddings``)
        read it.
    candidate_embeddings : callable, optional
        ``(modality, ids [Q, k]) -> [Q, k, d]``, for the same methods.
    """

    query_modality: str
    lists: dict[str, ModalityCandidates]
    query_embeddings: np.ndarray | None = None
    candidate_embeddings: Callable[[str, np.ndarray], np.ndarray] | None = None

    def __post_init__(self):
        if not self.lists:
            raise ValueError("no candidate lists to fuse")
        n_q = {c.ids.shape[0] for c in self.lists.values()}
        if len(n_q) != 1:
            raise ValueError(f"candidate lists disagree on the number of queries: {sorted(n_q)}")

    @property
    def n_queries(self) -> int:
        """Number of queries ``Q``."""
        return next(iter(self.lists.values())).ids.shape[0]

    @property
    def modalities(self) -> list[str]:
        """Candidate modalities, in list order."""
        return list(self.lists)

    @classmethod
    def from_topk(
        cls,
        topk: ModalityTopK,
        query_modality: str,
        *,
        rows: slice | np.ndarray | None = None,
        query_embeddings: np.ndarray | None = None,
        corpus: np.ndarray | None = None,
    ) -> CandidateBatch:
        """A batch from exact per-modality top-k search (:func:`~mmgap_core.topk_per_modality`).

        Parameters
        ----------
        topk : ModalityTopK
            Candidate corpus rows and cosines per query and modality (-1 / -inf padding).
        query_modality : str
            The modality of the queries.
        rows : slice or int array, optional
            The queries to take (default: all), e.g. ``slice(s, e)`` to fuse in chunks.
        query_embeddings : numpy.ndarray, optional
            ``[Q, d]`` embeddings of *all* of ``topk``'s queries; ``rows`` selects from them.
        corpus : numpy.ndarray, optional
            ``[N, d]`` corpus the candidate ids index; it serves the candidate embedding lookup.

        Returns
        -------
        CandidateBatch
            Candidate ids are corpus rows.
        """
        sel = slice(None) if rows is None else rows
        lists = {}
        for m in topk.modalities:
            idx, sc = topk.of(m)
            lists[m] = ModalityCandidates(idx[sel], sc[sel])
        q = None if query_embeddings is None else np.asarray(query_embeddings)[sel]
        lookup = None
        if corpus is not None:

            def lookup(_modality: str, ids: np.ndarray) -> np.ndarray:
                return corpus[np.where(ids >= 0, ids, 0)]

        return cls(query_modality, lists, query_embeddings=q, candidate_embeddings=lookup)

    @classmethod
    def from_hits(
        cls,
        hits: Mapping[str, ModalityHits],
        query_modality: str,
        query_embeddings: np.ndarray | None = None,
    ) -> CandidateBatch:
        """A batch from a store's per-modality answer (``store.query_per_modality``).

        Parameters
        ----------
        hits : mapping of str to ModalityHits
            Each modality's hits for the same ``Q`` queries.
        query_modality : str
            The modality of the queries.
        query_embeddings : numpy.ndarray, optional
            ``[Q, d]``, for methods that re-score in embedding space.

        Returns
        -------
        CandidateBatch
            Candidate ids are positions within each hit row: id ``j`` of query ``q`` in modality
            ``m`` is ``hits[m].ids[q][j]``. The candidate embedding lookup is set when every
            modality's hits carry embeddings.
        """
        lists, emb = {}, {}
        for m, h in hits.items():
            k = h.scores.shape[1]
            lengths = [len(r) for r in h.ids]
            if lengths.count(k) == len(lengths):  # full rows (the usual case): no masking
                ids = full_ids(len(lengths), k)
                scores = h.scores.astype(np.float64)
            else:
                cols = np.arange(k)
                ids = np.where(cols[None, :] < np.array(lengths)[:, None], cols[None, :], -1)
                scores = np.where(ids >= 0, h.scores[:, :k], 0.0)
            lists[m] = ModalityCandidates(ids, scores)
            emb[m] = h.embeddings
        lookup = None
        if all(e is not None for e in emb.values()):

            def lookup(modality: str, ids: np.ndarray) -> np.ndarray:
                return emb[modality][:, : ids.shape[1]]

        return cls(
            query_modality, lists, query_embeddings=query_embeddings, candidate_embeddings=lookup
        )
