"""Exact top-k mining streamed from a store in chunks, with bounded memory.

The store's embeddings are read one chunk at a time (``store.iter_embeddings``) and merged into a
running top-``k`` per (query, modality) by the same blocked scan as
:func:`~mmgap_core.mining.topk_per_modality` (:class:`StreamingTopK`). The result is that of mining
the whole corpus at once, ties included (the lower corpus row in iteration order wins); the
per-modality mean embeddings are summed (float64) in the same pass, so the corpus is read once.
Queries are excluded from their own candidates by store id.

Extra memory follows one byte budget, whatever the store's size: see :class:`StreamPlan`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .._validation import as_embeddings, positive_int
from ..mining import DEFAULT_BLOCK_BYTES, ModalityTopK, TopKScan, _inverse_norms

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "StreamPlan",
    "StreamingTopK",
    "mine_store_exact",
    "stream_store_topk",
]

logger = logging.getLogger(__name__)

MiB = 2**20
#: Extra memory streamed exact mining aims at (the hard ceiling is twice this, 512 MiB).
DEFAULT_MEMORY_BUDGET = 256 * MiB
#: The smallest budget accepted (``topk_per_modality`` needs a 1 MiB block at least).
MIN_MEMORY_BUDGET = 4 * MiB
#: Rows per store read at most: chromadb's ``get`` slows down per row beyond a few thousand.
MAX_CHUNK_ROWS = 4096
MIN_CHUNK_ROWS = 16
#: Peak bytes per embedding value while chromadb hands a chunk over: a Python float and its list
#: slot (32), the float64 array chromadb builds (8) and our float32 copy (4). Measured, 1.5.x.
STORE_BYTES_PER_VALUE = 44


@dataclass(frozen=True)
class StreamPlan:
    """How a byte budget is split: store chunk, mining block, and running top-k of a query block.

    A quarter of the budget goes to each of: the chunk being read (``chunk_rows``, with what
    chromadb allocates to hand it over), the score block of the scan (``block_bytes``, see
    :func:`~mmgap_core.mining.topk_per_modality`) and the per-query state of a block of queries
    (``query_block``: the running top-k, its copy in :meth:`StreamingTopK.result` and the float64
    lists handed on). More queries than one block are mined in several passes over the store; the
    last quarter is headroom (the queries' own copy, ids, interpreter and allocator slack).

    Attributes
    ----------
    chunk_rows : int
    block_bytes : int
    query_block : int
    """

    chunk_rows: int
    block_bytes: int
    query_block: int

    @classmethod
    def for_budget(
        cls, n_queries: int, dim: int, k: int, n_modalities: int, budget: int
    ) -> StreamPlan:
        """The plan for ``n_queries`` queries of width ``dim``, ``k`` per modality, in ``budget``.

        Raises
        ------
        ValueError
            When ``budget`` is below :data:`MIN_MEMORY_BUDGET`.
        """
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
            raise ValueError(f"memory_budget must be a number of bytes, got {budget!r}")
        if budget < MIN_MEMORY_BUDGET:
            raise ValueError(f"memory_budget must be at least {MIN_MEMORY_BUDGET} bytes ({budget})")
        quarter = int(budget) // 4
        chunk_rows = max(
            MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, quarter // (STORE_BYTES_PER_VALUE * dim))
        )
        per_query = n_modalities * k * (12 + 12 + 8)
        query_block = max(1, min(max(n_queries, 1), quarter // per_query))
        return cls(chunk_rows, max(MiB, quarter), query_block)


class StreamingTopK:
    """Exact top-``k`` per (query, modality) over a corpus fed chunk by chunk.

    Corpus rows are numbered in the order chunks are added, across modalities. Each chunk goes
    through :class:`~mmgap_core.mining.TopKScan`, the inner loop of
    :func:`~mmgap_core.mining.topk_per_modality`, with the running lists kept between chunks (so
    each query's current k-th best prunes the next chunk). After every chunk has been added,
    :meth:`result` is what :func:`~mmgap_core.mining.topk_per_modality` returns for the
    concatenated chunks: ties go to the lower row, ``-1`` / ``-inf`` where a modality runs out.
    Scores may differ in the last float32 bit (BLAS may round a dot product differently for
    another block shape), and so the order of two candidates within that rounding.

    Parameters
    ----------
    queries : numpy.ndarray
        ``[Q, d]`` query embeddings (need not be unit length).
    modalities : sequence of str
        The modalities, in output order.
    k : int
        List width.
    block_bytes : int, default 64 MiB
        ``max_block_bytes`` of the scan (see :func:`~mmgap_core.mining.topk_per_modality`).
    """

    def __init__(
        self, queries, modalities: Sequence[str], k: int, block_bytes: int = DEFAULT_BLOCK_BYTES
    ):
        self.k = positive_int(k, "k")
        if block_bytes < MiB:
            raise ValueError("block_bytes must be at least 1 MiB")
        self.queries = as_embeddings(queries, "queries", allow_empty=True)
        self.modalities = [str(m) for m in modalities]
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities: expected distinct labels, got {self.modalities}")
        n_q = self.queries.shape[0]
        self._scan = TopKScan(self.queries, self.k, block_bytes) if n_q else None
        self._best = {
            m: (
                np.full((n_q, self.k), -np.inf, dtype=np.float32),
                np.full((n_q, self.k), -1, dtype=np.int64),
            )
            for m in self.modalities
        }
        self._ids: dict[int, str] = {}
        #: Corpus rows added so far, in all and per modality.
        self.rows_seen = 0
        self.per_modality = dict.fromkeys(self.modalities, 0)

    def add(
        self,
        modality: str,
        chunk,
        exclude: np.ndarray | None = None,
        ids: Sequence[str] | None = None,
    ) -> None:
        """Merge the next chunk of ``modality`` into the running top-``k``.

        Parameters
        ----------
        modality : str
            One of :attr:`modalities`.
        chunk : array_like
            ``[n, d]`` candidate embeddings, the next ``n`` corpus rows.
        exclude : numpy.ndarray, optional
            ``[Q]`` row of the chunk (0-based, -1 for none) that each query itself is.
        ids : sequence of str, optional
            The chunk's ids; when given, :meth:`ids_of` can name the rows kept.
        """
        if modality not in self._best:
            raise ValueError(f"unknown modality {modality!r}; expected one of {self.modalities}")
        n_q, dim = self.queries.shape
        chunk = as_embeddings(chunk, f"{modality} chunk", dim=dim, allow_empty=True, finite=False)
        n = chunk.shape[0]
        if ids is not None and len(ids) != n:
            raise ValueError(f"ids: {len(ids)} ids for a chunk of {n} rows")
        if exclude is not None:
            exclude = np.asarray(exclude)
            if exclude.shape != (n_q,) or not np.issubdtype(exclude.dtype, np.integer):
                raise ValueError(f"exclude: expected {n_q} integer row numbers (-1 for none)")
            if exclude.size and (exclude.max() >= n or exclude.min() < -1):
                raise ValueError(f"exclude: row numbers must be in [-1, {n - 1}]")
        start = self.rows_seen
        self.rows_seen += n
        self.per_modality[modality] += n
        if n == 0 or self._scan is None:
            return
        cb = self._scan.cb
        c_inv = _inverse_norms(chunk, f"{modality} chunk", cb)
        rows = np.arange(start, start + n, dtype=np.int64)
        glob = None if exclude is None else np.where(exclude >= 0, exclude + start, -1)
        best_s, best_i = self._best[modality]
        for cs in range(0, n, cb):
            blk_inv = None if c_inv is None else c_inv[cs : cs + cb]
            self._scan.scan(chunk[cs : cs + cb], blk_inv, rows[cs : cs + cb], best_s, best_i, glob)
        if ids is not None:
            for row in np.unique(best_i[best_i >= start]):
                self._ids[int(row)] = ids[int(row) - start]

    def result(self) -> ModalityTopK:
        """The top-``k`` of every row added so far: ``indices`` are corpus rows in add order."""
        n_q = self.queries.shape[0]
        scores = np.empty((n_q, len(self.modalities), self.k), dtype=np.float32)
        rows = np.empty((n_q, len(self.modalities), self.k), dtype=np.int64)
        for j, m in enumerate(self.modalities):
            best_s, best_i = self._best[m]
            scores[:, j], rows[:, j] = best_s, np.where(np.isfinite(best_s), best_i, -1)
        return ModalityTopK(list(self.modalities), rows, scores)

    def ids_of(self, modality: str) -> np.ndarray:
        """``[Q, k]`` object array of the ids kept for ``modality`` (``None`` where unknown).

        Ids are known for rows added with ``ids``.
        """
        best_s, best_i = self._best[modality]
        out = np.full(best_i.shape, None, dtype=object)
        for (r, c), row in np.ndenumerate(best_i):
            if row >= 0 and np.isfinite(best_s[r, c]):
                out[r, c] = self._ids.get(int(row))
        return out


def _exclusions(
    self_ids: Sequence[str | None] | None,
) -> Callable[[Sequence[str]], np.ndarray | None] | None:
    """A function from a chunk's ids to each query's own row in it (-1 for none)."""
    if self_ids is None or all(i is None for i in self_ids):
        return None
    owners: dict[str, list[int]] = {}
    for q, cid in enumerate(self_ids):
        if cid is not None:
            owners.setdefault(cid, []).append(q)
    n_q = len(self_ids)

    def rows_in(chunk_ids: Sequence[str]) -> np.ndarray | None:
        out = None
        for r, cid in enumerate(chunk_ids):
            qs = owners.get(cid)
            if qs is not None:
                if out is None:
                    out = np.full(n_q, -1, dtype=np.int64)
                out[qs] = r
        return out

    return rows_in


def stream_store_topk(
    store,
    queries: np.ndarray,
    self_ids: Sequence[str | None] | None,
    k: int,
    *,
    modalities: Sequence[str],
    plan: StreamPlan,
    sums: dict[str, tuple[np.ndarray, int]] | None = None,
    track_ids: bool = False,
    progress=None,
) -> StreamingTopK:
    """One pass over the store: the exact top-``k`` per modality of every query.

    Parameters
    ----------
    store : VectorStore
        Read through ``store.iter_embeddings(modality, plan.chunk_rows)``.
    queries : numpy.ndarray
        ``[Q, d]``, at most ``plan.query_block`` of them for the budget to hold.
    self_ids : sequence of str or None, optional
        The store id each query is (``None``: not stored); never returned for that query, in any
        modality.
    k : int
    modalities : sequence of str
        Modalities to read, in order (the corpus row order).
    plan : StreamPlan
    sums : dict, optional
        When given, filled with ``{modality: (float64 sum of the embeddings, rows)}``.
    track_ids : bool, default False
        Remember the ids of the rows kept (:meth:`StreamingTopK.ids_of`).
    progress : tqdm or None
        Updated by the number of rows read.

    Returns
    -------
    StreamingTopK
    """
    acc = StreamingTopK(queries, modalities, k, plan.block_bytes)
    own_rows = _exclusions(self_ids)
    for m in modalities:
        total = np.zeros(acc.queries.shape[1], dtype=np.float64)
        for chunk_ids, emb in store.iter_embeddings(m, plan.chunk_rows):
            emb = as_embeddings(emb, f"stored {m} embeddings", dim=acc.queries.shape[1])
            exclude = None if own_rows is None else own_rows(chunk_ids)
            acc.add(m, emb, exclude, chunk_ids if track_ids else None)
            if sums is not None:
                total += emb.sum(axis=0, dtype=np.float64)
            if progress is not None:
                progress.update(len(chunk_ids))
        if sums is not None:
            sums[m] = (total, acc.per_modality[m])
    return acc


def mine_store_exact(
    store,
    query_sets: Mapping[str, object],
    k: int,
    fit: Callable[[str, dict[str, np.ndarray]], None],
    *,
    counts: Mapping[str, int],
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Exact self-excluded top-``k`` lists of every query set, streamed from the store.

    All query sets are mined in the same pass (several passes when they hold more queries than
    one block of the budget, see :class:`StreamPlan`); the per-modality means come from the
    first pass.

    Parameters
    ----------
    store : VectorStore
    query_sets : mapping of str to QuerySet
        Calibration queries per query modality.
    k : int
        List width.
    fit : callable
        Called as ``fit(query_modality, lists)`` for each block of queries, ``lists`` being
        ``{candidate modality: [q, k] float64 scores}`` best first, ``-inf`` padded.
    counts : mapping of str to int
        Item counts per modality (sizes the progress bar; empty modalities are skipped).
    memory_budget : int, default 256 MiB
        Extra bytes to stay within (besides the queries themselves).
    progress : bool, default False

    Returns
    -------
    dict of str to numpy.ndarray
        The float64 mean embedding of each modality that holds items.
    """
    from tqdm.auto import tqdm

    names = list(query_sets)
    queries = np.concatenate(
        [as_embeddings(query_sets[q].embeddings, f"{q} calibration queries") for q in names]
    )
    owner = np.repeat(np.arange(len(names)), [query_sets[q].embeddings.shape[0] for q in names])
    self_ids: list[str | None] = []
    for q in names:
        ids = query_sets[q].self_ids
        self_ids.extend(ids if ids is not None else [None] * query_sets[q].embeddings.shape[0])
    modalities = [m for m in store.modalities() if counts.get(m, 0) > 0]
    plan = StreamPlan.for_budget(
        queries.shape[0], queries.shape[1], k, len(modalities), memory_budget
    )
    blocks = range(0, queries.shape[0], plan.query_block)
    logger.info(
        "streaming exact mining: %d queries in %d pass(es), %d rows a chunk, budget %d MiB",
        queries.shape[0],
        len(blocks),
        plan.chunk_rows,
        memory_budget // MiB,
    )
    sums: dict[str, tuple[np.ndarray, int]] = {}
    bar = tqdm(
        total=len(blocks) * sum(counts.get(m, 0) for m in modalities),
        desc="calibrating (exact)",
        unit="item",
        disable=not progress,
    )
    with bar:
        for b, s in enumerate(blocks):
            e = min(s + plan.query_block, queries.shape[0])
            acc = stream_store_topk(
                store,
                queries[s:e],
                self_ids[s:e],
                k,
                modalities=modalities,
                plan=plan,
                sums=sums if b == 0 else None,
                progress=bar,
            )
            found = acc.result()
            present = [m for m in modalities if acc.per_modality[m] > 0]
            for i, qm in enumerate(names):
                rows = np.flatnonzero(owner[s:e] == i)
                if rows.size:
                    fit(qm, {m: found.of(m)[1][rows].astype(np.float64) for m in present})
    return {m: total / n for m, (total, n) in sorted(sums.items()) if n > 0}
