"""Results of ``mmgap reproduce``: one :class:`ModelResult` per model, gathered in a
:class:`ReproduceReport` that prints the paper-style tables and writes JSON and CSV.

Two-kind benchmarks (MMQA, WebQA) get the paper's same- vs cross-modal Recall@K tables; three-kind
ones (MixBench) get nDCG@10 by gold kind and the GR-CLIP head-to-head (:mod:`.report_kinds`).
"""

from __future__ import annotations

import collections
import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..evaluation import EvalReport
from ..jsonio import atomic_write_text

__all__ = [
    "CAPTION_METHOD",
    "CROSS_MODAL",
    "QUERY_MODALITY",
    "SAME_MODAL",
    "ModelResult",
    "ReproduceReport",
]

QUERY_MODALITY = "text"
SAME_MODAL, CROSS_MODAL = "text", "image"  # gold-modality subsets, for text queries
CAPTION_METHOD = "caption-baseline"
CSV_FIELDS = ["model", "method", "subset", "metric", "value"]


@dataclass
class ModelResult:
    """One model's evaluation, as ``mmgap eval`` reports it, plus what the encoder dropped.

    Attributes
    ----------
    model_id : str
        The encoder's model id (the key in :attr:`ReproduceReport.models`).
    label : str
        The name the model was given as (``NAME:TAG``, or the model id).
    report : EvalReport
        Recall@K and the other metrics per method and gold-modality subset.
    encoder_skipped : collections.Counter
        Items the encoder (or the captioner) could not embed, per reason.
    dropped_queries : collections.Counter
        Questions left out, per reason (question or all gold items not embedded).
    query_counts, corpus_counts : dict of str to int
        Questions per gold modality, and corpus items per modality, that were evaluated.
    n_embedded, n_from_cache : int
        Items embedded by this run, and items read from the cache.
    seconds : float
        Wall time of the model's run.
    caption_baseline : dict or None
        What the caption baseline did (captioner, captioned, skipped, ...), if it ran.
    """

    model_id: str
    label: str
    report: EvalReport
    encoder_skipped: collections.Counter
    dropped_queries: collections.Counter
    query_counts: dict[str, int]
    corpus_counts: dict[str, int]
    n_embedded: int
    n_from_cache: int
    seconds: float
    caption_baseline: dict | None = None

    def value(self, method: str, subset: str, metric: str) -> float:
        """Return one metric value, NaN when the report lacks it.

        Parameters
        ----------
        method, subset, metric : str
            E.g. ``"standardize"``, ``"image"``, ``"recall@20"``.

        Returns
        -------
        float
        """
        try:
            return float(self.report.value(method, subset, metric))
        except KeyError:
            return float("nan")

    def gain(self, k: int) -> dict:
        """Compare cross-modal (gold = image) Recall@k of standardize with raw.

        Parameters
        ----------
        k : int
            The cut-off.

        Returns
        -------
        dict
            ``{"k", "raw", "standardize", "relative", "absolute"}``; ``relative`` is None when
            raw is 0, the numbers NaN when a value is missing.
        """
        raw = self.value("raw", CROSS_MODAL, f"recall@{k}")
        std = self.value("standardize", CROSS_MODAL, f"recall@{k}")
        absolute = std - raw if not (math.isnan(raw) or math.isnan(std)) else float("nan")
        relative = absolute / raw if raw > 0 and not math.isnan(absolute) else None
        return {"k": k, "raw": raw, "standardize": std, "relative": relative, "absolute": absolute}

    def to_json(self, k: int) -> dict:
        """Return the ``mmgap eval --json`` shape, with this run's counts added to ``stats``.

        Parameters
        ----------
        k : int
            The cut-off of ``cross_modal_gain``.

        Returns
        -------
        dict
            ``{"results": [...], "stats": {...}}``.
        """
        out = self.report.to_json()
        stats = dict(out["stats"])
        stats.update(
            {
                "model_id": self.model_id,
                "model": self.label,
                "query_counts": self.query_counts,
                "skipped": dict(sorted(self.encoder_skipped.items())),
                "dropped_queries": dict(sorted(self.dropped_queries.items())),
                "embedded": {"new": self.n_embedded, "from_cache": self.n_from_cache},
                "seconds": round(self.seconds, 3),
                "cross_modal_gain": {
                    key: None if isinstance(v, float) and v != v else v
                    for key, v in self.gain(k).items()
                },
                "caption_baseline": self.caption_baseline,
            }
        )
        return {"results": out["results"], "stats": stats}


def _fmt(v: float) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def _fmt_gain(g: dict) -> tuple[str, str]:
    if g["absolute"] != g["absolute"]:
        return "-", "-"
    rel = "n/a" if g["relative"] is None else f"{100 * g['relative']:+.1f}%"
    return rel, f"{g['absolute']:+.3f}"


@dataclass
class ReproduceReport:
    """Results over all models of one ``reproduce`` call.

    Attributes
    ----------
    dataset : dict
        The dataset's name, split, pool, counts and source files.
    models : dict of str to ModelResult
        Keyed by model id.
    skipped_models : dict of str to str
        Label -> why the model was not evaluated.
    ks : tuple of int
        The Recall@K cut-offs.
    methods : list of str
        The fusion methods.
    pool : {"context", "global"}
        The candidate pool.
    dataset_skipped : dict of str to int
        What the loader skipped, per reason.
    captioner : str or None
        The caption baseline's captioner, if any.
    """

    dataset: dict
    models: dict[str, ModelResult]
    skipped_models: dict[str, str]
    ks: tuple[int, ...]
    methods: list[str]
    pool: str
    dataset_skipped: dict[str, int] = field(default_factory=dict)
    captioner: str | None = None

    @property
    def three_kinds(self) -> bool:
        """True for a three-kind benchmark (MixBench): its tables split by text/image/multimodal."""
        return len(self.dataset.get("kinds", ())) > 2

    @property
    def gain_k(self) -> int:
        """The cut-off the gain is reported at: 20 if evaluated, else the largest."""
        return 20 if 20 in self.ks else max(self.ks)

    def _method_rows(self, result: ModelResult) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in result.report.results))

    def model_table(self, result: ModelResult) -> str:
        """Format one model's table.

        Parameters
        ----------
        result : ModelResult
            One of :attr:`models`.

        Returns
        -------
        str
            Recall@K per method split by gold modality, and the cross-modal gain of standardize
            (three kinds: :func:`~.report_kinds.kinds_model_table`).
        """
        if self.three_kinds:
            from .report_kinds import kinds_model_table

            return kinds_model_table(self, result)
        counts, corpus = result.query_counts, result.corpus_counts
        lines = [
            f"=== {result.model_id}",
            f"{self.dataset['name']} {self.dataset['split']}, {self.pool} pool: "
            f"{sum(counts.values())} questions ({counts.get('text', 0)} text, "
            f"{counts.get('image', 0)} image); corpus {corpus.get('text', 0)} passages + "
            f"{corpus.get('image', 0)} images; calibration transductive",
        ]
        skipped = (
            "; ".join(f"{n} {r}" for r, n in sorted(result.encoder_skipped.items())) or "nothing"
        )
        dropped = "; ".join(f"{n} {r}" for r, n in sorted(result.dropped_queries.items())) or "none"
        lines.append(f"encoder skipped: {skipped}")
        lines.append(f"questions dropped: {dropped}")
        cols = [f"R@{k}" for k in self.ks]
        cell = max(6, *(len(c) for c in cols)) + 1
        methods = self._method_rows(result)
        width = max(len("method"), *(len(m) for m in methods)) + 2
        block = cell * len(cols)
        groups = [f"gold = {SAME_MODAL} (same-modal)", f"gold = {CROSS_MODAL} (cross-modal)"]
        lines.append("")
        lines.append(" " * width + "".join(g.center(block + 3) for g in groups).rstrip())
        lines.append(
            "method".ljust(width) + " | ".join("".join(c.rjust(cell) for c in cols) for _ in groups)
        )
        for m in methods:
            parts = []
            for subset in (SAME_MODAL, CROSS_MODAL):
                parts.append(
                    "".join(
                        _fmt(result.value(m, subset, f"recall@{k}")).rjust(cell) for k in self.ks
                    )
                )
            lines.append(m.ljust(width) + " | ".join(parts))
        g = result.gain(self.gain_k)
        rel, absolute = _fmt_gain(g)
        lines.append("")
        lines.append(
            f"cross-modal gain of standardize over raw (R@{g['k']}, gold = image): {rel} "
            f"(raw {_fmt(g['raw'])} -> standardized {_fmt(g['standardize'])}, absolute {absolute})"
        )
        return "\n".join(lines) + "\n"

    def summary_table(self) -> str:
        """Format one row per model: same- and cross-modal Recall@K raw vs standardized, the gain.

        Returns
        -------
        str
        """
        if self.three_kinds:
            from .report_kinds import kinds_summary_table

            return kinds_summary_table(self)
        k = self.gain_k
        ids = list(self.models)
        width = max(len("model"), *(len(i) for i in ids)) + 2
        head = ["text raw", "text std", "image raw", "image std", "gain", "abs diff"]
        cell = max(len(h) for h in head) + 2
        lines = [
            f"Recall@{k} per model ({self.dataset['name']} {self.dataset['split']}, "
            f"{self.pool} pool; "
            f"text = same-modal, image = cross-modal)",
            "model".ljust(width) + "".join(h.rjust(cell) for h in head),
        ]
        for mid in ids:
            r = self.models[mid]
            g = r.gain(k)
            rel, absolute = _fmt_gain(g)
            cells = [
                _fmt(r.value("raw", SAME_MODAL, f"recall@{k}")),
                _fmt(r.value("standardize", SAME_MODAL, f"recall@{k}")),
                _fmt(g["raw"]),
                _fmt(g["standardize"]),
                rel,
                absolute,
            ]
            lines.append(mid.ljust(width) + "".join(c.rjust(cell) for c in cells))
        return "\n".join(lines) + "\n"

    def table(self) -> str:
        """Format the paper-style report.

        Returns
        -------
        str
            A table per model, one over all models when there are several, the skipped models.
        """
        parts = [self.model_table(r) for r in self.models.values()]
        if len(self.models) > 1:
            parts.append(self.summary_table())
        if self.skipped_models:
            parts.append(
                "models skipped:\n"
                + "".join(f"  {label}: {reason}\n" for label, reason in self.skipped_models.items())
            )
        return "\n".join(parts)

    def to_json(self) -> dict:
        """Return the report as JSON-ready data.

        Returns
        -------
        dict
            ``{"dataset", "settings", "models": {model_id: <mmgap eval --json shape>}, "skipped"}``.
        """
        return {
            "dataset": self.dataset,
            "settings": {
                "pool": self.pool,
                "methods": self.methods,
                "ks": list(self.ks),
                "query_modality": QUERY_MODALITY,
                "calibration": "transductive",
                "caption_baseline": self.captioner,
                **(
                    {"kinds": self.dataset["kinds"], "alpha": self.dataset.get("alpha")}
                    if self.three_kinds
                    else {}
                ),
            },
            "models": {mid: r.to_json(self.gain_k) for mid, r in self.models.items()},
            "skipped": {"dataset": dict(self.dataset_skipped), "models": dict(self.skipped_models)},
        }

    def csv_rows(self) -> list[dict]:
        """Return one row per model / method / subset / metric (``value`` None when undefined)."""
        rows = []
        for mid, r in self.models.items():
            for row in r.report.to_json()["results"]:
                rows.append({"model": mid, **row})
        return rows

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write :meth:`csv_rows` as CSV, atomically.

        Parameters
        ----------
        path : str or os.PathLike
            The file; its folder is created if missing.

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self.csv_rows():
            writer.writerow(
                {**row, "value": "" if row["value"] is None else repr(float(row["value"]))}
            )
        return atomic_write_text(path, buf.getvalue())
