"""Fit a calibration record from a store: calibration queries, pseudo-positive mining, means.

Two mining strategies (``mining=``):

* ``"exact"`` (the default, at any size): the store's embeddings are streamed in chunks and mined
  exactly (:mod:`~mmgap_core.calibration.streaming`), within a fixed memory budget; the
  per-modality means come from the same pass. Recorded as ``"exact"``.
* ``"store-index"``: each query's lists come from the store's own approximate (HNSW) index.
  Faster per query, but biased on large stores (it misses cross-modal nearest neighbours), so
  its top-1 agreement with exact mining is measured on a random subset of the queries and
  recorded in the provenance (``mining_agreement``). Recorded as ``"store nearest-neighbour"``.

Calibration queries drawn from the store are excluded from their own candidates; the
"self-excluded best hit per modality" of store queries is :func:`query_best_hits`, which
``mmgap inspect`` uses too.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .._validation import as_embeddings, int_at_least
from ..background import BackgroundScale
from ..background_math import BACKGROUND_RANKS
from ..stats import ModalityStandardizer
from ..store.base import VectorStore
from .centered import fit_centered_scale, fit_directions
from .record import CalibrationRecord, Provenance
from .store_index import (
    AGREEMENT_SAMPLE,
    MEANS_SAMPLE,
    QUERY_BATCH,
    measure_agreement,
    query_best_hits,
    query_lists,
    sampled_means,
    self_excluded_lists,
)
from .streaming import DEFAULT_MEMORY_BUDGET, mine_store_exact

__all__ = [
    "AGREEMENT_SAMPLE",
    "DEFAULT_MEMORY_BUDGET",
    "MEANS_SAMPLE",
    "MINING_CHOICES",
    "QUERY_BATCH",
    "QuerySet",
    "StoreCorpus",
    "query_lists",
    "self_excluded_lists",
    "check_counts",
    "fit_calibration",
    "given_query_set",
    "load_corpus",
    "measure_agreement",
    "query_best_hits",
    "resolve_mining",
    "sample_query_sets",
]

logger = logging.getLogger(__name__)

#: ``mining=`` values: streamed exact mining, or the store's approximate index.
MINING_CHOICES = ("exact", "store-index")
#: What the provenance records for each (unchanged from earlier records).
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
    """Read every stored embedding of every modality into memory.

    Calibration no longer does this (it streams, see :func:`fit_calibration`); kept for callers
    that want the whole corpus.
    """
    embs, labels, ids = [], [], []
    for m in store.modalities():
        for batch_ids, e in store.iter_embeddings(m):
            embs.append(e)
            labels.extend([m] * len(batch_ids))
            ids.extend(batch_ids)
    return StoreCorpus(np.concatenate(embs), np.asarray(labels), ids)


def check_counts(counts: Mapping[str, int]) -> None:
    """Refuse an empty store, or one with an empty modality; warn about a single modality."""
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
    sample = int_at_least(sample, "sample", 2)
    out = {}
    for qm in query_modalities or list(counts):
        if qm not in counts:
            raise ValueError(f"unknown query modality {qm!r}; store modalities: {sorted(counts)}")
        ids, _docs, emb = store.sample_documents(qm, sample, seed)
        out[qm] = QuerySet(emb, list(ids))
    return out


def resolve_mining(
    mining: str, exact_max_items: int | None, n_items: int, *, stacklevel: int = 2
) -> str:
    """The mining strategy to use: ``mining``, or ``"store-index"`` for the deprecated threshold.

    Parameters
    ----------
    mining : {"exact", "store-index"}
    exact_max_items : int or None
        Deprecated (a ``FutureWarning``): when given, stores of more than this many items are mined
        through the store's index, as before streamed exact mining existed.
    n_items : int
        Items in the store.
    stacklevel : int, default 2
        Of the warning, as seen from the caller of this function.

    Returns
    -------
    str
        One of :data:`MINING_CHOICES`.
    """
    if mining not in MINING_CHOICES:
        raise ValueError(f"mining must be one of {list(MINING_CHOICES)}, got {mining!r}")
    if exact_max_items is None:
        return mining
    warnings.warn(
        "exact_max_items is deprecated: exact mining is now streamed from the store with bounded "
        "memory at any size; pass mining='store-index' to use the store's approximate index",
        FutureWarning,
        stacklevel=stacklevel + 1,
    )
    exact_max_items = int_at_least(exact_max_items, "exact_max_items", 0)
    return "store-index" if mining == "exact" and n_items > exact_max_items else mining


def _pairs(lists: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(pseudo-positive scores, their modality labels): the finite first column of each list."""
    scores, labels = [], []
    for m, v in lists.items():
        best = v[:, 0][np.isfinite(v[:, 0])]
        scores.append(best)
        labels.append(np.full(best.shape[0], m))
    if not scores:
        return np.zeros(0), np.zeros(0, dtype=str)
    return np.concatenate(scores), np.concatenate(labels)


def fit_calibration(
    store: VectorStore,
    query_sets: Mapping[str, QuerySet],
    *,
    counts: Mapping[str, int],
    model_id: str | None,
    dim: int | None,
    mining: str = "exact",
    exact_max_items: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    agreement_sample: int = AGREEMENT_SAMPLE,
    seed: int = 0,
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
    mining : {"exact", "store-index"}, default "exact"
        ``"exact"``: stream the store's embeddings in chunks and mine exactly, with bounded memory,
        at any size. ``"store-index"``: the store's approximate index (see the module docstring).
    exact_max_items : int, optional
        Deprecated, see :func:`resolve_mining`.
    memory_budget : int, default 256 MiB
        Extra memory exact mining may use (see :class:`~.streaming.StreamPlan`).
    agreement_sample : int, default 100
        With ``"store-index"``: queries per query modality checked against exact mining (0: none;
        the ``center`` means then come from a sample of the store).
    seed : int, default 0
        Of the agreement subset.
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
    mining = resolve_mining(mining, exact_max_items, sum(counts.values()))
    agreement_sample = int_at_least(agreement_sample, "agreement_sample", 0)
    k = max(1, min(BACKGROUND_RANKS, max(counts.values())))
    logger.info(
        "calibrating %s query modalities by %s mining over %s",
        sorted(query_sets),
        mining,
        dict(counts),
    )
    std = ModalityStandardizer(model_id=model_id, dim=dim)
    background = BackgroundScale(model_id=model_id, dim=dim)

    def fit(qm: str, lists: dict[str, np.ndarray]) -> None:
        scores, labels = _pairs(lists)
        std.partial_fit(scores, labels, qm)
        sizes = {m: max(int(counts.get(m, 0)), lists[m].shape[1], 1) for m in lists}
        background.partial_fit(lists, qm, sizes)

    for qm, qs in query_sets.items():
        as_embeddings(qs.embeddings, f"{qm} calibration queries", dim=dim)
    agreement = None
    if mining == "exact":
        means = mine_store_exact(
            store, query_sets, k, fit, counts=counts, memory_budget=memory_budget, progress=progress
        )
    else:
        for qm, qs in query_sets.items():
            # HNSW is approximate: benchmarks/README.md says how often it misses.
            fit(qm, query_lists(store, qs.embeddings, qs.self_ids, k=k, progress=progress))
        if agreement_sample:
            agreement, means = measure_agreement(
                store,
                query_sets,
                counts,
                sample=agreement_sample,
                memory_budget=memory_budget,
                seed=seed,
                progress=progress,
            )
            logger.info("store-index top-1 agreement with exact mining: %s", agreement["top1"])
        else:
            means = sampled_means(store)
    for qm in query_sets:
        missing = sorted(set(counts) - set(std.candidate_modalities(qm)))
        if missing:
            raise ValueError(
                f"calibration found no pseudo-positive {missing} candidate for any {qm} query "
                f"(store holds {dict(counts)}); index more items or pass calibration queries"
            )
    directions = centered = None
    if means:
        directions = fit_directions(store, means, seed)
        centered = fit_centered_scale(
            store,
            query_sets,
            means,
            counts,
            model_id=model_id,
            dim=dim,
            seed=seed,
            progress=progress,
            directions=directions,
        )
    given = any(qs.self_ids is None for qs in query_sets.values())
    provenance = Provenance(
        model_id=model_id,
        dim=dim,
        source="given queries" if given else "store sample (self-excluded)",
        mining=EXACT if mining == "exact" else THROUGH_STORE,
        fitted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        calibration_queries={qm: int(qs.embeddings.shape[0]) for qm, qs in query_sets.items()},
        mining_agreement=agreement,
    )
    return CalibrationRecord(
        std, dict(counts), means or None, provenance, background, centered, directions
    )
