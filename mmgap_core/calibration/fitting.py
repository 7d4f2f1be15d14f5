"""Fit a calibration record from a store: calibration queries, pseudo-positive mining, means.

Two mining strategies give the same statistics up to the store's index error:

* ``exact``: the store's embeddings are read into memory once and mined with
  :func:`~mmgap_core.mining.mine_pseudo_positives` (blocked BLAS, exact).
* ``store nearest-neighbour``: each query's best hit per modality comes from the store's own
  (approximate) index, for stores too large to read back.

Calibration queries drawn from the store are excluded from their own candidates; the
"self-excluded best hit per modality" of store queries is :func:`query_best_hits`, which
``mmgap inspect`` uses too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .._validation import as_embeddings
from ..background import BackgroundScale
from ..mining import topk_per_modality
from ..stats import ModalityStandardizer
from ..store.base import ModalityHits, VectorStore
from .record import CalibrationRecord, Provenance

__all__ = [
    "DEFAULT_EXACT_MAX_ITEMS",
    "MEANS_SAMPLE",
    "QuerySet",
    "StoreCorpus",
    "best_hit_scores",
    "query_lists",
    "self_excluded_lists",
    "check_counts",
    "fit_calibration",
    "given_query_set",
    "load_corpus",
    "query_best_hits",
    "sample_query_sets",
]

logger = logging.getLogger(__name__)

#: Beyond this many stored items, calibration mines through the store's nearest-neighbour index.
DEFAULT_EXACT_MAX_ITEMS = 200_000
#: Items per modality behind the ``center`` means when mining goes through the store.
MEANS_SAMPLE = 20_000
#: Calibration lists hold each query's top this-many per modality (background scale fit).
BACKGROUND_RANKS = 50
#: Queries per store call when mining through the store.
QUERY_BATCH = 256
EXACT = "exact"
THROUGH_STORE = "store nearest-neighbour"


@dataclass
class QuerySet:
    """Calibration queries of one query modality.

    Attributes
    ----------
    embeddings : numpy.ndarray
        ``[Q, d]`` float32 query embeddings.
    self_ids : list of str or None
        The store ids the queries are (each is excluded from its own candidates), or ``None`` for
        queries from outside the store.
    """

    embeddings: np.ndarray
    self_ids: list[str] | None = None


@dataclass
class StoreCorpus:
    """Every embedding of a store, in memory: ``vectors [N, d]``, ``labels [N]`` and ``ids``."""

    vectors: np.ndarray
    labels: np.ndarray
    ids: list[str]

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """Corpus row of each id (-1 for an id not in the corpus)."""
        row = {cid: i for i, cid in enumerate(self.ids)}
        return np.asarray([row.get(cid, -1) for cid in ids], dtype=np.int64)


def load_corpus(store: VectorStore) -> StoreCorpus:
    """Read every stored embedding of every modality."""
    embs, labels, ids = [], [], []
    for m in store.modalities():
        for batch_ids, e in store.iter_embeddings(m):
            embs.append(e)
            labels.extend([m] * len(batch_ids))
            ids.extend(batch_ids)
    return StoreCorpus(np.concatenate(embs), np.asarray(labels), ids)


def check_counts(counts: Mapping[str, int]) -> None:
    """Refuse to calibrate an empty store, or one with an empty modality; warn about one modality."""
    if not counts or all(n == 0 for n in counts.values()):
        raise ValueError("the store is empty: index texts and images before calibrating")
    empty = [m for m, n in counts.items() if n == 0]
    if empty:
        raise ValueError(f"cannot calibrate: modality {empty} holds no items; index some first")
    if len(counts) == 1:
        logger.warning(
            "the store holds %s items only: calibrate again once it holds other modalities",
            next(iter(counts)),
        )


def given_query_set(queries, encoder, dim: int | None, progress: bool = False) -> QuerySet:
    """Calibration queries from outside the store: an embedding matrix, or texts to embed.

    Parameters
    ----------
    queries : numpy.ndarray or sequence of str
    encoder : Encoder or None
        Embeds texts; ``None`` when only embeddings can be given.
    dim : int or None
        The store's dimension, checked for an embedding matrix.
    progress : bool, default False

    Returns
    -------
    QuerySet
        With no store ids (nothing to exclude).
    """
    if isinstance(queries, np.ndarray):
        return QuerySet(as_embeddings(queries, "calibration queries", dim=dim))
    qs = list(queries)
    if not qs:
        raise ValueError("calibration queries: empty list")
    if encoder is None:
        raise ValueError("calibrating from query texts needs an encoder; this engine has none")
    es = encoder.embed_texts(qs, progress=progress)
    if len(es) == 0:
        raise ValueError(f"calibration queries: none could be embedded ({es.failures})")
    return QuerySet(es.vectors)


def sample_query_sets(
    store: VectorStore,
    counts: Mapping[str, int],
    sample: int,
    query_modalities: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, QuerySet]:
    """Calibration queries drawn from the store: ``sample`` items of each query modality.

    Parameters
    ----------
    store : VectorStore
    counts : mapping of str to int
        The store's item counts (its modalities are the keys).
    sample : int
        Items per query modality (at least 2).
    query_modalities : sequence of str, optional
        Default: every modality in ``counts``.
    seed : int, default 0

    Returns
    -------
    dict of str to QuerySet
        Each query remembers its store id, to be excluded from its own candidates.
    """
    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 2:
        raise ValueError(f"sample must be an integer >= 2, got {sample!r}")
    out = {}
    for qm in query_modalities or list(counts):
        if qm not in counts:
            raise ValueError(f"unknown query modality {qm!r}; store modalities: {sorted(counts)}")
        ids, _docs, emb = store.sample_documents(qm, int(sample), seed)
        out[qm] = QuerySet(emb, list(ids))
    return out


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
            own = self_ids[r] if self_ids is not None else None
            kept = [j for j, cid in enumerate(row_ids) if cid != own][:width]
            lists[r, : len(kept)] = h.scores[r, kept]
        out[m] = lists
    return out


def best_hit_scores(
    hits: Mapping[str, ModalityHits], self_ids: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Each query's best score per modality, skipping the query's own id.

    Parameters
    ----------
    hits : mapping of str to ModalityHits
        A store's answer for ``Q`` queries, best first.
    self_ids : sequence of str, optional
        The store id each query is (``Q`` of them), excluded from its own hits.

    Returns
    -------
    dict of str to numpy.ndarray
        ``[Q]`` float64 per modality; NaN where a query has no other hit in that modality.
    """
    return {
        m: np.where(np.isfinite(v[:, 0]), v[:, 0], np.nan)
        for m, v in self_excluded_lists(hits, self_ids, 1).items()
    }


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
    parts: dict[str, list[np.ndarray]] = {}
    n = queries.shape[0]
    for s in tqdm(range(0, n, batch_size), desc="calibrating", disable=not progress):
        own = None if self_ids is None else self_ids[s : s + batch_size]
        want = {m: min(k + (self_ids is not None), c) for m, c in counts.items() if c > 0}
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
    store : VectorStore
    queries : numpy.ndarray
        ``[Q, d]`` query embeddings.
    self_ids : sequence of str, optional
        The store id each query is; one extra neighbour is fetched so it can be dropped.
    batch_size : int, default 256
        Queries per store call.
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    dict of str to numpy.ndarray
        ``[Q]`` float64 best score per modality, NaN where there is none (see
        :func:`best_hit_scores`).
    """
    lists = query_lists(store, queries, self_ids, k=1, batch_size=batch_size, progress=progress)
    return {m: np.where(np.isfinite(v[:, 0]), v[:, 0], np.nan) for m, v in lists.items()}


def _mine(store, corpus, qs: QuerySet, counts, progress: bool):
    """(pseudo-positive scores, their modality labels, best-first lists per modality) of a query set.

    The lists hold each query's top :data:`BACKGROUND_RANKS` (self-excluded) per modality: their
    first column gives the pseudo-positives, the whole of them the background scales.
    """
    k = max(1, min(BACKGROUND_RANKS, max(counts.values())))
    if corpus is not None:
        exclude = None if qs.self_ids is None else corpus.rows_of(qs.self_ids)
        found = topk_per_modality(qs.embeddings, corpus.vectors, corpus.labels, k, exclude=exclude)
        lists = {m: found.of(m)[1].astype(np.float64) for m in found.modalities}
    else:
        # The store's HNSW index is approximate: see benchmarks/README.md for how often it misses.
        lists = query_lists(store, qs.embeddings, qs.self_ids, k=k, progress=progress)
    scores, labels = [], []
    for m, v in lists.items():
        best = v[:, 0][np.isfinite(v[:, 0])]
        scores.append(best)
        labels.append(np.full(best.shape[0], m))
    if not scores:
        return np.zeros(0), np.zeros(0, dtype=str), lists
    return np.concatenate(scores), np.concatenate(labels), lists


def modality_means(store: VectorStore, corpus: StoreCorpus | None = None) -> dict[str, np.ndarray]:
    """Mean embedding per modality (for ``center``).

    Exact from a loaded corpus; else estimated from a sample of :data:`MEANS_SAMPLE` items of each
    modality (reading every embedding back from a large store costs more than mining).
    """
    if corpus is not None:
        return {
            str(m): corpus.vectors[corpus.labels == m].mean(axis=0, dtype=np.float64)
            for m in np.unique(corpus.labels)
        }
    means = {}
    for m in store.modalities():
        _ids, _docs, emb = store.sample_documents(m, MEANS_SAMPLE, 0)
        if emb.shape[0]:
            means[m] = emb.mean(axis=0, dtype=np.float64)
    return means


def fit_calibration(
    store: VectorStore,
    query_sets: Mapping[str, QuerySet],
    *,
    counts: Mapping[str, int],
    model_id: str | None,
    dim: int | None,
    exact_max_items: int = DEFAULT_EXACT_MAX_ITEMS,
    progress: bool = False,
) -> CalibrationRecord:
    """Mine pseudo-positives for each query set and fit a calibration record.

    Parameters
    ----------
    store : VectorStore
    query_sets : mapping of str to QuerySet
        Calibration queries per query modality.
    counts : mapping of str to int
        The store's item counts now (recorded as the corpus sizes).
    model_id, dim : str or int or None
        What the statistics are fitted for.
    exact_max_items : int, default 200_000
        Mine exactly in memory up to this many stored items, else through the store's index.
    progress : bool, default False

    Returns
    -------
    CalibrationRecord

    Raises
    ------
    ValueError
        When some modality got no pseudo-positive for a query modality (its only items were the
        self-excluded queries themselves).
    """
    exact = sum(counts.values()) <= exact_max_items
    # Exact mining reads the corpus once for every query modality and for the means.
    corpus = load_corpus(store) if exact else None
    logger.info(
        "calibrating %s query modalities by %s mining over %s",
        sorted(query_sets),
        EXACT if exact else THROUGH_STORE,
        dict(counts),
    )
    std = ModalityStandardizer(model_id=model_id, dim=dim)
    background = BackgroundScale(model_id=model_id, dim=dim)
    for qm, qs in query_sets.items():
        as_embeddings(qs.embeddings, f"{qm} calibration queries", dim=dim)
        scores, labels, lists = _mine(store, corpus, qs, counts, progress)
        std.partial_fit(scores, labels, qm)
        sizes = {m: max(int(counts.get(m, 0)), lists[m].shape[1], 1) for m in lists}
        background.partial_fit(lists, qm, sizes)
        missing = sorted(set(counts) - set(std.candidate_modalities(qm)))
        if missing:
            raise ValueError(
                f"calibration found no pseudo-positive {missing} candidate for any {qm} query "
                f"(store holds {dict(counts)}); index more items or pass calibration queries"
            )
    given = any(qs.self_ids is None for qs in query_sets.values())
    provenance = Provenance(
        model_id=model_id,
        dim=dim,
        source="given queries" if given else "store sample (self-excluded)",
        mining=EXACT if exact else THROUGH_STORE,
        fitted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        calibration_queries={qm: int(qs.embeddings.shape[0]) for qm, qs in query_sets.items()},
    )
    means = modality_means(store, corpus)
    return CalibrationRecord(std, dict(counts), means or None, provenance, background)
