"""Tables of a three-kind ``mmgap reproduce`` run (MixBench): results split by the gold item's kind.

MixBench's headline metric is nDCG@10 (GR-CLIP's), so each model's table opens with the
head-to-head of GR-CLIP's comparison (``raw``, ``center``, ``grclip``, ``standardize`` and
mmgap's default method) in nDCG@10 by gold kind: text, image, multimodal. A second block lists
every method with nDCG@10, R@1 and R@10 per kind.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .. import fusion

__all__ = [
    "GRCLIP_ANCHORS",
    "HEAD_TO_HEAD",
    "head_to_head_methods",
    "headline_k",
    "kinds_model_table",
    "kinds_summary_table",
]

logger = logging.getLogger(__name__)

HEAD_TO_HEAD = ("raw", "center", "grclip", "standardize")
GRCLIP_ANCHORS = (
    "GR-CLIP's published MixBench nDCG@10 (not reproducible offline, no weights): "
    "CLIP-L/14 .48 -> .63, SigLIP .41 -> .67 (raw -> GR-CLIP)"
)
SUBSETS = ("all", "text", "image", "multimodal")


def default_method() -> str | None:
    """mmgap's default fusion method (:data:`mmgap_core.fusion.DEFAULT_METHOD`), if defined."""
    return getattr(fusion, "DEFAULT_METHOD", None)


def headline_k(ks: Sequence[int]) -> int:
    """The nDCG cut-off of the headline: 10 if evaluated, else the largest."""
    return 10 if 10 in ks else max(ks)


def head_to_head_methods(methods: Sequence[str]) -> list[str]:
    """The head-to-head rows among ``methods``: GR-CLIP's comparison, then mmgap's default."""
    wanted = [*HEAD_TO_HEAD, default_method()]
    return [m for m in dict.fromkeys(wanted) if m is not None and m in methods]


def _fmt(v) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def _subsets(result) -> list[str]:
    present = {r["subset"] for r in result.report.results}
    extra = sorted(present - set(SUBSETS))  # "mixed": gold items of several kinds
    return [s for s in SUBSETS if s in present or s != "all" and s in result.query_counts] + extra


def _counts_line(report, result) -> str:
    q, c = result.query_counts, result.corpus_counts
    gold = ", ".join(f"{n} {k}" for k, n in q.items())
    corpus = " + ".join(f"{n} {k}" for k, n in c.items())
    info = report.dataset
    return (
        f"{info['name']} {info['split']}, {report.pool} pool: {sum(q.values())} questions "
        f"(gold kind: {gold}); corpus {corpus} (multimodal = normalise({info.get('alpha', 0.5)} "
        f"* text + {1 - info.get('alpha', 0.5):g} * image)); calibration transductive"
    )


def kinds_model_table(report, result) -> str:
    """Format one model's three-kind table.

    Parameters
    ----------
    report : ReproduceReport
        The run's report (settings, dataset facts).
    result : ModelResult
        One of ``report.models``.

    Returns
    -------
    str
        The head-to-head in nDCG@K, then every method's nDCG@K, R@1 and R@K per gold kind
        (K = 10 when evaluated).
    """
    k = headline_k(report.ks)
    skipped = "; ".join(f"{n} {r}" for r, n in sorted(result.encoder_skipped.items()))
    dropped = "; ".join(f"{n} {r}" for r, n in sorted(result.dropped_queries.items()))
    lines = [
        f"=== {result.model_id}",
        _counts_line(report, result),
        f"encoder skipped: {skipped or 'nothing'}",
        f"questions dropped: {dropped or 'none'}",
        "",
    ]
    subsets = _subsets(result)
    methods = list(dict.fromkeys(r["method"] for r in result.report.results))
    width = max(len("method"), *(len(m) for m in methods)) + 2
    default = default_method()
    h2h = head_to_head_methods(methods)
    if h2h:
        labels = {m: f"{m} (default)" if m == default else m for m in h2h}
        w = max(len("method"), *(len(v) for v in labels.values())) + 2
        lines.append(f"head-to-head, nDCG@{k} by gold kind (MixBench's headline metric)")
        lines.append("method".ljust(w) + "".join(s.rjust(12) for s in subsets) + "   all vs raw")
        raw = result.value("raw", "all", f"ndcg@{k}")
        for m in h2h:
            cells = [_fmt(result.value(m, s, f"ndcg@{k}")).rjust(12) for s in subsets]
            val = result.value(m, "all", f"ndcg@{k}")
            gain = "" if m == "raw" or raw != raw or val != val else f"   {val - raw:+.3f}"
            lines.append(labels[m].ljust(w) + "".join(cells) + gain)
        lines.append(GRCLIP_ANCHORS)
        lines.append("")
    cols = [f"ndcg@{k}", "recall@1", f"recall@{k}"]
    heads = [f"nDCG@{k}", "R@1", f"R@{k}"]
    block = 8 * len(cols)
    lines.append("every method, by gold kind: " + " / ".join(heads))
    lines.append(" " * width + " | ".join(s.center(block) for s in subsets))
    lines.append(
        "method".ljust(width) + " | ".join("".join(h.rjust(8) for h in heads) for _ in subsets)
    )
    for m in methods:
        parts = ["".join(_fmt(result.value(m, s, c)).rjust(8) for c in cols) for s in subsets]
        lines.append(m.ljust(width) + " | ".join(parts))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def kinds_summary_table(report) -> str:
    """Format one row per model: nDCG@K over all questions for each head-to-head method.

    Parameters
    ----------
    report : ReproduceReport
        A report with several models.

    Returns
    -------
    str
    """
    k = headline_k(report.ks)
    ids = list(report.models)
    methods = head_to_head_methods(report.methods)
    width = max(len("model"), *(len(i) for i in ids)) + 2
    cell = max([12, *(len(m) + 2 for m in methods)])
    lines = [
        f"nDCG@{k} per model, all questions ({report.dataset['name']} {report.dataset['split']})",
        "model".ljust(width) + "".join(m.rjust(cell) for m in methods),
    ]
    for mid in ids:
        r = report.models[mid]
        lines.append(
            mid.ljust(width)
            + "".join(_fmt(r.value(m, "all", f"ndcg@{k}")).rjust(cell) for m in methods)
        )
    return "\n".join(lines) + "\n"
