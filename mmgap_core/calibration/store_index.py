"""Mining through the store's own (approximate) nearest-neighbour index, and its error.

* :func:`query_lists` / :func:`query_best_hits`: each query's self-excluded best-first scores per
  modality from ``store.query_per_modality`` (``mmgap inspect`` uses the best hits too).
* :func:`measure_agreement`: how often that index finds the exact top-1, on a random subset of
  the calibration queries (one streamed exact pass, which also gives exact modality means).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..store.base import ModalityHits, VectorStore
from .streaming import DEFAULT_MEMORY_BUDGET, StreamPlan, stream_store_topk

__all__ = [
    "AGREEMENT_SAMPLE",
    "MEANS_SAMPLE",
    "QUERY_BATCH",
    "measure_agreement",
    "other_hits",
    "query_best_hits",
    "query_lists",
    "sampled_means",
    "self_excluded_lists",
]

logger = logging.getLogger(__name__)

#: Queries per store call when mining through the store.
QUERY_BATCH = 256
#: Items per modality behind the ``center`` means of the store-index path without agreement check.
MEANS_SAMPLE = 20_000
#: Calibration queries per query modality whose store-index top-1 is checked against exact mining.
AGREEMENT_SAMPLE = 100
#: Cosines this close to the exact best count as the same pick (a tie, or float error).
TIE_TOLERANCE = 1e-5


def self_excluded_lists(
    hits: Mapping[str, ModalityHits], self_ids: Sequence[str] | None = None, k: int | None = None
) -> dict[str, np.ndarray]:
    """Each query's best-first scores per modality, without the query's own id.

    Parameters
    ----------
    hits : mapping of str to ModalityHits
        A store's answer for ``Q`` queries, best first.
    self_ids : sequence of str, optional
        The store id each query is (``Q`` of them), dropped from its own hits.
    k : int, optional
        Width of the lists (default: the hits' width, less one when ``self_ids`` is given).

    Returns
    -------
    dict of str to numpy.ndarray
        ``[Q, k]`` float64 per modality, ``-inf`` padding where a row has fewer hits.
    """
    out = {}
    for m, h in hits.items():
        width = k if k is not None else max(h.k - (self_ids is not None), 1)
        lists = np.full((len(h.ids), width), -np.inf)
        for r, row_ids in enumerate(h.ids):
            kept = other_hits(row_ids, self_ids[r] if self_ids is not None else None, width)
            lists[r, : len(kept)] = h.scores[r, kept]
        out[m] = lists
    return out


def other_hits(row_ids: Sequence[str], own: str | None, width: int) -> list[int]:
    """Positions of the first ``width`` hits of a row that are not the query's own id."""
    return [j for j, cid in enumerate(row_ids) if cid != own][:width]


def query_lists(
    store: VectorStore,
    queries: np.ndarray,
    self_ids: Sequence[str] | None = None,
    *,
    k: int = 1,
    batch_size: int = QUERY_BATCH,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The self-excluded top-``k`` scores per modality of each query, through the store's index.

    Parameters
    ----------
    store : VectorStore
    queries : numpy.ndarray
        ``[Q, d]`` query embeddings.
    self_ids : sequence of str, optional
        The store id each query is; one extra neighbour is fetched so it can be dropped.
    k : int, default 1
        List width.
    batch_size : int, default 256
        Queries per store call.
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    dict of str to numpy.ndarray
        ``[Q, k]`` float64 per modality, ``-inf`` padding (see :func:`self_excluded_lists`).
    """
    from tqdm.auto import tqdm

    counts = store.counts()
    want = {m: min(k + (self_ids is not None), c) for m, c in counts.items() if c > 0}
    parts: dict[str, list[np.ndarray]] = {}
    n = queries.shape[0]
    for s in tqdm(range(0, n, batch_size), desc="calibrating", disable=not progress):
        own = None if self_ids is None else self_ids[s : s + batch_size]
        hits = store.query_per_modality(queries[s : s + batch_size], want)
        for m, lists in self_excluded_lists(hits, own, k).items():
            parts.setdefault(m, []).append(lists)
    return {m: np.concatenate(v) for m, v in parts.items()}


def query_best_hits(
    store: VectorStore,
    queries: np.ndarray,
    self_ids: Sequence[str] | None = None,
    *,
    batch_size: int = QUERY_BATCH,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The self-excluded best hit per modality of each query, through the store's index.

    Parameters
    ----------
    store, queries, self_ids, batch_size, progress
        As for :func:`query_lists`.

    Returns
    -------
    dict of str to numpy.ndarray
        ``[Q]`` float64 best score per modality, NaN where there is none.
    """
    lists = query_lists(store, queries, self_ids, k=1, batch_size=batch_size, progress=progress)
    return {m: np.where(np.isfinite(v[:, 0]), v[:, 0], np.nan) for m, v in lists.items()}


def _store_top1(store, queries, self_ids, counts, modalities):
    """Per modality: (id [Q] object, score [Q]) of each query's self-excluded best store hit."""
    ids = {m: np.full(queries.shape[0], None, dtype=object) for m in modalities}
    scores = {m: np.full(queries.shape[0], -np.inf) for m in modalities}
    for s in range(0, queries.shape[0], QUERY_BATCH):
        own = self_ids[s : s + QUERY_BATCH]
        want = {m: min(1 + any(i is not None for i in own), counts[m]) for m in modalities}
        for m, h in store.query_per_modality(queries[s : s + QUERY_BATCH], want).items():
            for r, row_ids in enumerate(h.ids):
                for j in other_hits(row_ids, own[r], 1):
                    ids[m][s + r], scores[m][s + r] = row_ids[j], float(h.scores[r, j])
    return ids, scores


def measure_agreement(
    store: VectorStore,
    query_sets: Mapping[str, Any],
    counts: Mapping[str, int],
    *,
    sample: int = AGREEMENT_SAMPLE,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict, dict[str, np.ndarray]]:
    """How often the store's index finds the exact top-1 per modality, on a subset of queries.

    ``sample`` random queries of each query set are mined exactly (one streamed pass over the
    store, which also gives the exact per-modality means) and through the store's index. A pair
    (query, candidate modality) agrees when the store's self-excluded best hit is the exact one:
    the same id, or a tie (a cosine within :data:`TIE_TOLERANCE` of the exact best).

    Returns
    -------
    agreement : dict
        ``{"queries": {query modality: n}, "top1": {"q->m": share}, "score_shortfall":
        {"q->m": mean exact minus store best cosine}}``, for :attr:`Provenance.mining_agreement`.
    means : dict of str to numpy.ndarray
        Exact mean embedding per modality.
    """
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    modalities = [m for m in store.modalities() if counts.get(m, 0) > 0]
    parts, ids, names, sizes = [], [], [], {}
    for qm, qs in query_sets.items():
        n = qs.embeddings.shape[0]
        pick = np.sort(rng.choice(n, size=min(int(sample), n), replace=False))
        parts.append(qs.embeddings[pick])
        ids.extend(
            [qs.self_ids[i] for i in pick] if qs.self_ids is not None else [None] * len(pick)
        )
        names.extend([qm] * len(pick))
        sizes[qm] = len(pick)
    queries = np.concatenate(parts)
    plan = StreamPlan.for_budget(
        queries.shape[0], queries.shape[1], 1, len(modalities), memory_budget
    )
    sums: dict[str, tuple[np.ndarray, int]] = {}
    total = sum(counts.get(m, 0) for m in modalities)
    with tqdm(total=total, desc="agreement check", disable=not progress) as bar:
        exact = stream_store_topk(
            store, queries, ids, 1, modalities=modalities, plan=plan, sums=sums,
            track_ids=True, progress=bar,
        )  # fmt: skip
    approx_ids, approx_scores = _store_top1(store, queries, ids, counts, modalities)
    names_arr, found = np.asarray(names), exact.result()
    top1, shortfall = {}, {}
    for qm in sizes:
        rows = np.flatnonzero(names_arr == qm)
        for m in modalities:
            e_ids = exact.ids_of(m)[rows, 0]
            e_sc = found.of(m)[1][rows, 0].astype(np.float64)
            has = np.asarray([i is not None for i in e_ids])
            if not has.any():
                continue
            a_sc = approx_scores[m][rows]
            same = (approx_ids[m][rows] == e_ids) | (a_sc >= e_sc - TIE_TOLERANCE)
            top1[f"{qm}->{m}"] = float(same[has].mean())
            gap = np.where(np.isfinite(a_sc), e_sc - a_sc, np.nan)[has]
            shortfall[f"{qm}->{m}"] = float(np.nanmean(gap)) if np.isfinite(gap).any() else 0.0
    means = {m: t / n for m, (t, n) in sorted(sums.items()) if n > 0}
    return {"queries": sizes, "top1": top1, "score_shortfall": shortfall}, means


def sampled_means(store: VectorStore) -> dict[str, np.ndarray]:
    """Mean embedding per modality estimated from :data:`MEANS_SAMPLE` items of each."""
    means = {}
    for m in store.modalities():
        _ids, _docs, emb = store.sample_documents(m, MEANS_SAMPLE, 0)
        if emb.shape[0]:
            means[m] = emb.mean(axis=0, dtype=np.float64)
    return means
