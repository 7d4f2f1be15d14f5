"""Evaluate every fusion method on one set of embeddings: `mmgap eval`, `mmgap bench`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._validation import as_embeddings, as_labels
from .candidates import CandidateBatch
from .fusion import (
    DEFAULT_METHOD,
    parse_methods,
)
from .evaluation_calibration import CHUNK, fit_methods
from .metrics import Qrels, evaluate_ranking
from .mining import (
    DEFAULT_BLOCK_BYTES,
    ModalityTopK,
    topk_per_modality,
)
from .stats import ModalityStandardizer

DEFAULT_KS = (1, 5, 10, 20)
DEFAULT_POOL = 100


@dataclass
class EvalReport:
    """``results`` rows: ``{"method", "subset", "metric", "value"}``; ``stats``: how it ran."""

    results: list[dict]
    stats: dict
    notes: list[str] = field(default_factory=list)
    ks: tuple[int, ...] = DEFAULT_KS
    query_modality: str = "text"
    # Each evaluation query's best raw cosine per modality, and the fitted statistics: for plots.
    top1_scores: dict[str, np.ndarray] = field(default_factory=dict)
    standardizer: ModalityStandardizer | None = None

    def to_json(self) -> dict:
        """The documented JSON shape; NaN (an empty subset) becomes null."""
        return {"results": strip_counts(self.results), "stats": self.stats}

    def value(self, method: str, subset: str, metric: str) -> float:
        for r in self.results:
            if (r["method"], r["subset"], r["metric"]) == (method, subset, metric):
                return r["value"]
        raise KeyError((method, subset, metric))

    def table(self, metrics: Sequence[str] | None = None) -> str:
        return format_table(
            self.results, self.query_modality, metrics or default_table_metrics(self.ks)
        )


def default_table_metrics(ks: Sequence[int]) -> list[str]:
    ks = sorted(ks)
    k_mid = 10 if 10 in ks else ks[-1]
    return [f"recall@{k}" for k in ks] + [f"mrr@{k_mid}", f"ndcg@{k_mid}"]


def subset_title(subset: str, query_modality: str) -> str:
    """A table block's title: which queries a subset of the results covers.

    Parameters
    ----------
    subset : str
        ``"all"``, or the modality of the queries' relevant items.
    query_modality : str
        The modality of the queries.

    Returns
    -------
    str
        ``"all queries"``, or ``"relevant item is M (same-modal)"`` / ``"(cross-modal)"``.
    """
    if subset == "all":
        return "all queries"
    if subset == query_modality:
        return f"relevant item is {subset} (same-modal)"
    return f"relevant item is {subset} (cross-modal)"


def format_table(
    results: list[dict],
    query_modality: str,
    metrics: Sequence[str],
    *,
    default_method: str | None = DEFAULT_METHOD,
) -> str:
    """One block per subset: a row per method, a column per metric plus the top-k modality shares.

    Parameters
    ----------
    results : list of dict
        Rows ``{"method", "subset", "metric", "value"}`` (``"n"``: queries in the subset).
    query_modality : str
        The queries' modality, for the block titles.
    metrics : sequence of str
        The metric columns, in order.
    default_method : str or None, default :data:`~mmgap_core.fusion.DEFAULT_METHOD`
        Marked with ``*`` in its rows, explained by a legend line; ``None``: no mark.

    Returns
    -------
    str
        The table, ending with a newline.
    """
    methods = list(dict.fromkeys(r["method"] for r in results))
    subsets = list(dict.fromkeys(r["subset"] for r in results))
    share_metrics = (
        sorted(
            {
                r["metric"]
                for r in results
                if r["metric"].startswith("share_") and r["metric"].endswith("@20")
            }
        )
        or sorted({r["metric"] for r in results if r["metric"].startswith("share_")})[:2]
    )
    cols = list(metrics) + share_metrics
    lookup = {(r["method"], r["subset"], r["metric"]): r for r in results}
    marked = default_method if default_method in methods else None

    def name(m: str) -> str:
        return f"{m} *" if m == marked else m

    width = max(len(name(m)) for m in methods) + 2 if methods else 8
    lines = []
    for subset in subsets:
        n = next((r.get("n") for r in results if r["subset"] == subset and "n" in r), None)
        title = subset_title(subset, query_modality) + (f", {n} queries" if n is not None else "")
        lines.append(title)
        lines.append(
            "  " + "method".ljust(width) + "".join(c.rjust(max(len(c), 7) + 2) for c in cols)
        )
        for m in methods:
            cells = []
            for c in cols:
                r = lookup.get((m, subset, c))
                v = "-" if r is None or r["value"] != r["value"] else f"{r['value']:.3f}"
                cells.append(v.rjust(max(len(c), 7) + 2))
            lines.append("  " + name(m).ljust(width) + "".join(cells))
        lines.append("")
    if marked:
        lines.append(f"* {marked}: the default method (engine, CLI and adapters)")
    return "\n".join(lines).rstrip() + "\n"


def evaluate_embeddings(
    queries,
    corpus,
    corpus_modalities,
    qrels: np.ndarray | Qrels,
    *,
    query_modality: str = "text",
    calibration_queries=None,
    methods: Sequence[str] | str | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    pool: int = DEFAULT_POOL,
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> EvalReport:
    """Run each fusion method over the same per-modality candidate pools; score it against qrels.

    Parameters
    ----------
    queries : array_like
        ``[Q, d]`` query embeddings, all of ``query_modality``.
    corpus : array_like
        ``[N, d]`` corpus embeddings.
    corpus_modalities : sequence of str
        ``[N]`` modality label per corpus row.
    qrels : numpy.ndarray or Qrels
        Relevant corpus rows per query.
    query_modality : str, default "text"
    calibration_queries : array_like, optional
        Unlabelled queries to calibrate on. Default: the evaluation queries themselves, without
        their labels (the paper's transductive setting).
    methods : str or sequence of str, optional
        Fusion methods (default: all of :data:`~mmgap_core.fusion.METHOD_NAMES`).
    ks : sequence of int, default (1, 5, 10, 20)
        Cut-offs of the metrics.
    pool : int, default 100
        Candidates per modality, retrieved exactly for every query. Methods that only rescale
        scores are exact for any top-K <= pool; ``center`` re-scores that pool.
    max_block_bytes : int
        Memory bound of the exact search.

    Returns
    -------
    EvalReport
    """
    corpus = as_embeddings(corpus, "corpus")
    queries = as_embeddings(queries, "queries", dim=corpus.shape[1])
    labels = as_labels(corpus_modalities, "corpus modality labels", corpus.shape[0])
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks: expected positive cut-offs, got {ks}")
    if pool < ks[-1]:
        raise ValueError(f"pool ({pool}) must be at least the largest k ({ks[-1]})")
    method_names = parse_methods(
        methods if methods is None or isinstance(methods, str) else ",".join(methods)
    )
    if not isinstance(qrels, Qrels):
        qrels = Qrels(qrels, queries.shape[0])
    if qrels.n_queries != queries.shape[0]:
        raise ValueError(
            f"qrels cover {qrels.n_queries} queries, embeddings have {queries.shape[0]}"
        )
    if qrels.rows.size and qrels.rows[:, 1].max() >= corpus.shape[0]:
        raise ValueError(f"qrels: corpus row out of range [0, {corpus.shape[0] - 1}]")
    retrieved = topk_per_modality(queries, corpus, labels, pool, max_block_bytes=max_block_bytes)
    return evaluate_candidates(
        retrieved,
        queries,
        corpus,
        labels,
        qrels,
        query_modality=query_modality,
        calibration_queries=calibration_queries,
        methods=method_names,
        ks=ks,
        max_block_bytes=max_block_bytes,
    )


def evaluate_candidates(
    retrieved: ModalityTopK,
    queries: np.ndarray,
    corpus: np.ndarray,
    labels: np.ndarray,
    qrels: Qrels,
    *,
    query_modality: str = "text",
    calibration_queries=None,
    methods: Sequence[str] | str | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> EvalReport:
    """Fuse and score given per-modality candidate lists (e.g. each question's own candidate pool).

    Parameters
    ----------
    retrieved : ModalityTopK
        Per query and modality, candidate corpus rows and raw cosines, best first (-1/-inf
        padding). Transductive calibration takes each query's top-1 per modality from these lists.
    queries, corpus : numpy.ndarray
        ``[Q, d]`` and ``[N, d]`` float32 embeddings, already checked.
    labels : numpy.ndarray
        ``[N]`` corpus modality labels.
    qrels : Qrels
    query_modality, calibration_queries, methods, ks, max_block_bytes
        As for :func:`evaluate_embeddings`.

    Returns
    -------
    EvalReport
    """
    ks = tuple(sorted({int(k) for k in ks}))
    method_names = parse_methods(
        methods if methods is None or isinstance(methods, str) else ",".join(methods)
    )
    pool = retrieved.scores.shape[2]
    modalities = list(retrieved.modalities)
    fusers, fitted = fit_methods(
        retrieved,
        queries,
        corpus,
        labels,
        qrels,
        method_names,
        query_modality=query_modality,
        calibration_queries=calibration_queries,
        max_block_bytes=max_block_bytes,
    )
    n_q, top = queries.shape[0], ks[-1]
    rankings = {name: np.full((n_q, top), -1, dtype=np.int64) for name in method_names}
    ranked_mods = {name: np.full((n_q, top), "", dtype=object) for name in method_names}

    for s in range(0, n_q, CHUNK):
        e = min(s + CHUNK, n_q)
        batch = CandidateBatch.from_topk(
            retrieved, query_modality, rows=slice(s, e), query_embeddings=queries, corpus=corpus
        )
        for name, fuser in fusers.items():
            fused = fuser.fuse(batch, top)
            rankings[name][s:e, : fused.ids.shape[1]] = fused.ids
            ranked_mods[name][s:e, : fused.ids.shape[1]] = fused.modality_labels()

    results = []
    for name in method_names:
        for row in evaluate_ranking(rankings[name], ranked_mods[name], qrels, labels, ks):
            results.append({"method": name, **row})

    stats = {
        "default_method": DEFAULT_METHOD,
        "n_queries": int(n_q),
        "query_modality": query_modality,
        "corpus_size": int(corpus.shape[0]),
        "corpus_modalities": fitted.counts,
        "dim": int(corpus.shape[1]),
        "pool_per_modality": int(pool),
        "calibration": {
            "setting": fitted.setting,
            "n_queries": int(fitted.n_calibration),
            "statistics": fitted.standardizer.to_dict(),
            "background_scale": (
                fitted.background.to_dict() if fitted.background is not None else None
            ),
            # two-view-z's second view: its scales, and how many top directions each modality
            # has removed (the directions themselves are calibration state, not a result).
            "centered_background_scale": (
                fitted.centered.to_dict() if fitted.centered is not None else None
            ),
            "n_directions": (
                {m: len(u) for m, u in fitted.directions.items()}
                if fitted.directions is not None
                else None
            ),
        },
        "gold_statistics": fitted.gold.to_dict() if fitted.gold is not None else None,
        "notes": fitted.notes,
    }
    top1 = {m: retrieved.scores[:, j, 0] for j, m in enumerate(modalities)}
    top1 = {m: v[np.isfinite(v)] for m, v in top1.items()}
    return EvalReport(results, stats, fitted.notes, ks, query_modality, top1, fitted.standardizer)


def strip_counts(results: list[dict]) -> list[dict]:
    """Result rows in the documented JSON shape (method, subset, metric, value)."""
    return [
        {
            "method": r["method"],
            "subset": r["subset"],
            "metric": r["metric"],
            "value": None if r["value"] != r["value"] else r["value"],
        }
        for r in results
    ]
