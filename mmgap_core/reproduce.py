"""Reproduce the paper's benchmark experiment (Yamashita et al. 2025) on MMQA / WebQA with open_clip models.

For each model: embed the questions (text) and the corpus (passages as text, images as images), cache the
vectors on disk, drop what the encoder cannot embed, and score every fusion method through the same code
as ``mmgap eval`` -- :func:`~mmgap_core.evaluation.evaluate_embeddings` for the global pool and
:func:`~mmgap_core.evaluation.evaluate_candidates` for each question's own context pool. Queries are
text; calibration is transductive (each question's top-1 per modality, without labels). The report
splits Recall@K by the gold modality: "text" is same-modal, "image" is cross-modal.

Embedding cache: one folder per model id under ``cache_dir``; each file holds the vectors (and the
failure reasons) of the items one run newly embedded, so nothing is stored twice. Text vectors are keyed
by a hash of the exact text embedded (which covers the source file and the item id), image vectors by
``image id | file name | size | mtime`` (or the TSV store's name, the line's offset, size and mtime), so
a changed source invalidates exactly the items it changes, and items are reused across pools and
``--limit`` runs. Files are written atomically (temporary file + rename); chunks are saved as they
finish, so an interrupted run resumes where it stopped. Failures are cached too (a corrupt image is not
retried until its file changes); delete the model's cache folder to start over.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import math
import os
import pickle
import re
import sys
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .captioning import Captioner, caption_corpus
from .datasets.base import MODALITIES, POOLS, BenchmarkDataset, BenchmarkQuery, ImageRef
from .evaluation import (
    DEFAULT_KS,
    DEFAULT_POOL,
    EvalReport,
    evaluate_candidates,
    evaluate_embeddings,
)
from .fusion import parse_methods
from .metrics import Qrels
from .mining import ModalityTopK

__all__ = [
    "CAPTION_METHOD",
    "CACHE_DIRNAME",
    "EmbeddingCache",
    "ModelResult",
    "ModelSpec",
    "ReproduceReport",
    "context_candidates",
    "default_cache_dir",
    "limit_dataset",
    "parse_model_specs",
    "reproduce",
]

QUERY_MODALITY = "text"
SAME_MODAL, CROSS_MODAL = "text", "image"  # gold-modality subsets, for text queries
CAPTION_METHOD = "caption-baseline"
CACHE_DIRNAME = ".mmgap-cache"
TEXT_CHUNK = 2048  # items embedded (and saved to the cache) at a time
IMAGE_CHUNK = 512
_CACHE_FORMAT = "mmgap-embeddings-v1"


# ------------------------------------------------------------------------------------ model specs


@dataclass(frozen=True)
class ModelSpec:
    """An open_clip model to build: architecture name, pretrained tag or checkpoint file, optional config."""

    model_name: str
    pretrained: str
    model_config: str | None = None

    @property
    def label(self) -> str:
        return f"{self.model_name}:{self.pretrained}"

    @classmethod
    def parse(cls, text: str, *, model_config: str | os.PathLike | None = None) -> ModelSpec:
        """``"NAME:TAG"`` (or ``"NAME:/path/to/checkpoint"``). ``model_config`` is attached only when
        its file name is ``NAME.json``: open_clip names a config after its file."""
        name, sep, pretrained = text.strip().partition(":")
        if not sep or not name.strip() or not pretrained.strip():
            raise ValueError(
                f"model spec {text!r}: expected NAME:TAG (e.g. ViT-B-32:laion2b_s34b_b79k)"
            )
        config = None
        if model_config is not None and Path(model_config).stem == name.strip():
            config = os.fspath(model_config)
        return cls(name.strip(), pretrained.strip(), config)


def parse_model_specs(
    spec: str, *, model_config: str | os.PathLike | None = None
) -> list[ModelSpec]:
    """Comma-separated ``NAME:TAG`` list -> :class:`ModelSpec` list (see :meth:`ModelSpec.parse`)."""
    parts = [p for p in spec.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"--models: expected NAME:TAG[,NAME:TAG...], got {spec!r}")
    return [ModelSpec.parse(p, model_config=model_config) for p in parts]


def _build_encoder(spec: ModelSpec, options: Mapping[str, Any]):
    from .encoders.open_clip import OpenClipEncoder

    return OpenClipEncoder(
        spec.model_name, spec.pretrained, model_config=spec.model_config, **dict(options)
    )


# Loading failures that skip one model and let the others run: missing / unknown weights, a bad tag
# or checkpoint path (ValueError), unreadable files, a checkpoint that does not fit the architecture.
_MODEL_LOAD_ERRORS = (ValueError, OSError, RuntimeError, pickle.UnpicklingError, KeyError)


# ------------------------------------------------------------------------------------ dataset helpers


def default_cache_dir(root: str | os.PathLike) -> Path:
    """``ROOT/.mmgap-cache`` when the dataset folder is writable, else ``~/.cache/mmgap``."""
    root = Path(root)
    candidate = root / CACHE_DIRNAME
    if candidate.is_dir() and os.access(candidate, os.W_OK):
        return candidate
    if not candidate.exists() and root.is_dir() and os.access(root, os.W_OK):
        return candidate
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmgap"


def limit_dataset(dataset: BenchmarkDataset, per_modality: int) -> BenchmarkDataset:
    """The first ``per_modality`` questions of each gold modality (file order).

    In the context setting the corpus shrinks to the kept questions' pools; in the global setting the
    corpus stays whole (only the questions are limited).
    """
    if isinstance(per_modality, bool) or not isinstance(per_modality, int) or per_modality < 1:
        raise ValueError(f"limit: expected a positive number of questions, got {per_modality!r}")
    seen: collections.Counter = collections.Counter()
    kept: list[BenchmarkQuery] = []
    for q in dataset.queries:
        if seen[q.gold_modality] < per_modality:
            seen[q.gold_modality] += 1
            kept.append(q)
    texts, images = dataset.texts, dataset.images
    if dataset.pool == "context":
        used = {i for q in kept for i in q.pool_ids or ()}
        texts = {k: v for k, v in texts.items() if k in used}
        images = {k: v for k, v in images.items() if k in used}
    return BenchmarkDataset(
        name=dataset.name,
        split=dataset.split,
        pool=dataset.pool,
        queries=kept,
        texts=texts,
        images=images,
        skipped=collections.Counter(dataset.skipped),
        source_files=list(dataset.source_files),
    )


# ------------------------------------------------------------------------------------ embedding cache


def _text_key(text: str) -> str:
    return "t:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _image_key(ref: ImageRef) -> str:
    """Identity of an image's bytes without reading them: id, file name, size and mtime."""
    where = ref.path if ref.path is not None else ref.tsv
    try:
        st = os.stat(where) if where is not None else None
    except OSError:
        st = None
    stamp = f"{st.st_size}|{st.st_mtime_ns}" if st is not None else "unreadable"
    name = where.name if where is not None else ""
    offset = f"@{ref.offset}" if ref.tsv is not None and ref.path is None else ""
    return f"i:{ref.id}|{name}{offset}|{stamp}"


def _slug(text: str, width: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:width].strip("_") or "model"


@dataclass
class _Embedded:
    """Vectors for a set of item keys: ``vectors[row_of[key]]``; failures key -> reason."""

    row_of: dict[str, int]
    vectors: np.ndarray
    failures: dict[str, str]
    n_new: int = 0
    n_cached: int = 0


class EmbeddingCache:
    """On-disk embeddings of one or more models, reusable item by item (see the module docstring).

    ``directory=None`` disables caching (everything is embedded, nothing written).
    """

    def __init__(
        self, directory: str | os.PathLike | None, *, log: Callable[[str], None] | None = None
    ):
        self.directory = Path(directory) if directory is not None else None
        self._log = log or (lambda _msg: None)

    def folder(self, model_id: str, kind: str) -> Path | None:
        if self.directory is None:
            return None
        digest = hashlib.sha256(model_id.encode()).hexdigest()[:12]
        return self.directory / f"{_slug(model_id)}-{digest}" / kind

    @staticmethod
    def set_digest(keys: Sequence[str]) -> str:
        return hashlib.sha256("\n".join(keys).encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def _read(self, path: Path, model_id: str, wanted: set[str]):
        """(keys->vector rows, failures) of ``wanted`` found in one cache file; None if unusable."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["format"]) != _CACHE_FORMAT or str(z["model_id"]) != model_id:
                    return None
                keys = z["keys"].tolist()
                pos = [i for i, k in enumerate(keys) if k in wanted]
                found, dim = {}, None
                if pos:  # read the vectors only from files that hold wanted items
                    matrix = z["vectors"]
                    dim = int(matrix.shape[1])
                    found = {keys[i]: matrix[i] for i in pos}
                failed = dict(zip(z["failed_keys"].tolist(), z["failed_reasons"].tolist()))
        except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as exc:
            self._log(f"ignoring unreadable cache file {path}: {type(exc).__name__}: {exc}")
            return None
        return found, {k: v for k, v in failed.items() if k in wanted}, dim

    def load(self, model_id: str, kind: str, keys: Sequence[str]):
        """What the cache holds for ``keys``: (key -> vector, key -> failure reason)."""
        folder = self.folder(model_id, kind)
        vectors: dict[str, np.ndarray] = {}
        failures: dict[str, str] = {}
        if folder is None or not folder.is_dir():
            return vectors, failures
        missing = set(keys)
        exact = folder / f"{self.set_digest(keys)}.npz"
        files = sorted(folder.glob("*.npz"), key=lambda p: (p != exact, -p.stat().st_mtime_ns))
        dim = None
        for path in files:
            if not missing:
                break
            got = self._read(path, model_id, missing)
            if got is None:
                continue
            found, failed, file_dim = got
            if file_dim is not None:
                if dim is not None and file_dim != dim:
                    continue
                dim = file_dim
            vectors.update(found)
            failures.update(failed)
            missing -= found.keys() | failed.keys()
        return vectors, failures

    def save(
        self,
        model_id: str,
        kind: str,
        name: str,
        vectors: Mapping[str, np.ndarray],
        failures: Mapping[str, str],
        dim: int,
    ) -> Path | None:
        """Write one cache file atomically (temporary file, then rename)."""
        folder = self.folder(model_id, kind)
        if folder is None:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        keys = list(vectors)
        matrix = (
            np.stack([vectors[k] for k in keys]).astype(np.float32)
            if keys
            else np.zeros((0, dim), dtype=np.float32)
        )
        path = folder / f"{name}.npz"
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    format=np.array(_CACHE_FORMAT),
                    model_id=np.array(model_id),
                    keys=np.array(keys, dtype=str),
                    vectors=matrix,
                    failed_keys=np.array(list(failures), dtype=str),
                    failed_reasons=np.array([failures[k] for k in failures], dtype=str),
                )
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    def embed(
        self,
        encoder,
        kind: str,
        keys: Sequence[str],
        make_inputs: Callable[[list[str]], tuple[list, dict[str, str]]],
        *,
        progress: bool = True,
        desc: str = "",
    ) -> _Embedded:
        """Vectors for unique ``keys``, from the cache where possible, else from ``encoder``.

        ``make_inputs(keys)`` returns the encoder inputs for those keys (in order; keys it cannot
        produce an input for are returned as failures and left out of the inputs).
        """
        from tqdm.auto import tqdm

        keys = list(dict.fromkeys(keys))
        model_id = encoder.model_id
        vectors, failures = self.load(model_id, kind, keys)
        n_cached = len(vectors) + len(failures)
        todo = [k for k in keys if k not in vectors and k not in failures]
        dim = next((int(v.shape[0]) for v in vectors.values()), None)
        new_vectors: dict[str, np.ndarray] = {}
        new_failures: dict[str, str] = {}
        parts: list[Path] = []
        if todo:
            chunk = TEXT_CHUNK if kind == "text" else IMAGE_CHUNK
            method = encoder.embed_texts if kind == "text" else encoder.embed_images
            with tqdm(
                total=len(todo),
                desc=desc or f"embedding {kind}s",
                unit=kind,
                disable=not progress,
                file=sys.stderr,
            ) as bar:
                for start in range(0, len(todo), chunk):
                    batch = todo[start : start + chunk]
                    inputs, pre_failed = make_inputs(batch)
                    ok_keys = [k for k in batch if k not in pre_failed]
                    chunk_vectors: dict[str, np.ndarray] = {}
                    chunk_failures = dict(pre_failed)
                    if inputs:
                        result = method(inputs, progress=False)
                        if dim is not None and len(result) and result.dim != dim:
                            raise ValueError(
                                f"{model_id}: the encoder returns {result.dim}-d vectors but the "
                                f"cache holds {dim}-d ones for this model id"
                            )
                        if len(result):
                            dim = result.dim
                        for pos, reason in result.failures.items():
                            chunk_failures[ok_keys[pos]] = reason
                        for row, pos in enumerate(result.indices.tolist()):
                            chunk_vectors[ok_keys[pos]] = result.vectors[row]
                    new_vectors.update(chunk_vectors)
                    new_failures.update(chunk_failures)
                    if len(todo) > chunk:  # resumable: finished chunks survive an interrupted run
                        part = self.save(
                            model_id,
                            kind,
                            f"part-{self.set_digest(batch)}",
                            chunk_vectors,
                            chunk_failures,
                            dim or 1,
                        )
                        if part is not None:
                            parts.append(part)
                    bar.update(len(batch))
            # One file per call holding only what was newly embedded: nothing is stored twice.
            self.save(model_id, kind, self.set_digest(todo), new_vectors, new_failures, dim or 1)
            for part in parts:
                part.unlink(missing_ok=True)
            vectors.update(new_vectors)
            failures.update(new_failures)
        if dim is None:
            dim = int(getattr(encoder, "dim", 1) or 1)
        ok = [k for k in keys if k in vectors]
        matrix = (
            np.stack([vectors[k] for k in ok]).astype(np.float32)
            if ok
            else np.zeros((0, dim), dtype=np.float32)
        )
        return _Embedded(
            row_of={k: i for i, k in enumerate(ok)},
            vectors=matrix,
            failures={k: failures[k] for k in keys if k in failures},
            n_new=len(todo),
            n_cached=n_cached,
        )


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|<[^>]*>")


def reason_category(reason: str) -> str:
    """A failure reason without the item-specific parts (paths, ids), for counting per reason."""
    text = _QUOTED.sub("", str(reason)).split(":", 1)[0]
    return " ".join(text.split()).strip(" .") or "unknown failure"


def _image_inputs(refs: Mapping[str, ImageRef]):
    """Encoder inputs for image keys: the file path (MMQA) or the decoded-from-base64 bytes (WebQA)."""

    def make(keys: list[str]):
        inputs, failed = [], {}
        for k in keys:
            ref = refs[k]
            if ref.path is not None:
                inputs.append(str(ref.path))
                continue
            try:
                inputs.append(ref.load_bytes())
            except (OSError, ValueError) as exc:
                failed[k] = f"cannot read image bytes: {exc}"
        return inputs, failed

    return make


def _text_inputs(texts: Mapping[str, str]):
    def make(keys: list[str]):
        return [texts[k] for k in keys], {}

    return make


# ------------------------------------------------------------------------------------ context pools


def context_candidates(
    queries: np.ndarray,
    corpus: np.ndarray,
    labels: np.ndarray,
    pools: Sequence[Sequence[int]],
    modalities: Sequence[str] = MODALITIES,
) -> ModalityTopK:
    """Each query's own candidate pool as per-modality lists: cosine scores, best first.

    ``pools[q]`` lists corpus rows. Lists are padded with -1 / -inf to the longest pool of any
    modality; ties are broken by the lower corpus row (as in :func:`~mmgap_core.mining.topk_per_modality`).
    """
    labels = np.asarray(labels)
    n_q = queries.shape[0]
    if len(pools) != n_q:
        raise ValueError(f"pools: expected one pool per query ({n_q}), got {len(pools)}")
    modalities = list(modalities)
    rows = [np.asarray(p, dtype=np.int64) for p in pools]
    width = max([1] + [int((labels[r] == m).sum()) for r in rows for m in modalities])
    indices = np.full((n_q, len(modalities), width), -1, dtype=np.int64)
    scores = np.full((n_q, len(modalities), width), -np.inf, dtype=np.float32)
    for qi, r in enumerate(rows):
        if r.size == 0:
            continue
        s = corpus[r] @ queries[qi]
        lab = labels[r]
        for j, m in enumerate(modalities):
            sel = lab == m
            if not sel.any():
                continue
            rm, sm = r[sel], s[sel]
            order = np.lexsort((rm, -sm))
            indices[qi, j, : order.size] = rm[order]
            scores[qi, j, : order.size] = sm[order]
    return ModalityTopK(modalities, indices, scores)


# ------------------------------------------------------------------------------------ results


@dataclass
class ModelResult:
    """One model's evaluation: ``report`` (as ``mmgap eval``) plus what the encoder dropped."""

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
        try:
            return float(self.report.value(method, subset, metric))
        except KeyError:
            return float("nan")

    def gain(self, k: int) -> dict:
        """Cross-modal (gold = image) Recall@k of raw and standardize, relative and absolute gain."""
        raw = self.value("raw", CROSS_MODAL, f"recall@{k}")
        std = self.value("standardize", CROSS_MODAL, f"recall@{k}")
        absolute = std - raw if not (math.isnan(raw) or math.isnan(std)) else float("nan")
        relative = absolute / raw if raw > 0 and not math.isnan(absolute) else None
        return {"k": k, "raw": raw, "standardize": std, "relative": relative, "absolute": absolute}

    def to_json(self, k: int) -> dict:
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
    """Results over all models. ``models`` is keyed by model id, ``skipped_models`` by spec label."""

    dataset: dict
    models: dict[str, ModelResult]
    skipped_models: dict[str, str]
    ks: tuple[int, ...]
    methods: list[str]
    pool: str
    dataset_skipped: dict[str, int] = field(default_factory=dict)
    captioner: str | None = None

    @property
    def gain_k(self) -> int:
        return 20 if 20 in self.ks else max(self.ks)

    def _method_rows(self, result: ModelResult) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in result.report.results))

    def model_table(self, result: ModelResult) -> str:
        """Recall@K per method, split by gold modality, and the cross-modal gain of standardize."""
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
        """One row per model: same- and cross-modal Recall@20 raw vs standardized, and the gain."""
        k = self.gain_k
        ids = list(self.models)
        width = max(len("model"), *(len(i) for i in ids)) + 2
        head = ["text raw", "text std", "image raw", "image std", "gain", "abs diff"]
        cell = max(len(h) for h in head) + 2
        lines = [
            f"Recall@{k} per model ({self.dataset['name']} {self.dataset['split']}, {self.pool} pool; "
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
        """The paper-style report: a table per model, then one over all models when there are several."""
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
        """``{"dataset", "settings", "models": {model_id: <mmgap eval --json shape>}, "skipped"}``."""
        return {
            "dataset": self.dataset,
            "settings": {
                "pool": self.pool,
                "methods": self.methods,
                "ks": list(self.ks),
                "query_modality": QUERY_MODALITY,
                "calibration": "transductive",
                "caption_baseline": self.captioner,
            },
            "models": {mid: r.to_json(self.gain_k) for mid, r in self.models.items()},
            "skipped": {"dataset": dict(self.dataset_skipped), "models": dict(self.skipped_models)},
        }

    def csv_rows(self) -> list[dict]:
        rows = []
        for mid, r in self.models.items():
            for row in r.report.to_json()["results"]:
                rows.append({"model": mid, **row})
        return rows

    def write_csv(self, path: str | os.PathLike) -> Path:
        """One row per model / method / subset / metric, written atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf, fieldnames=["model", "method", "subset", "metric", "value"], lineterminator="\n"
        )
        writer.writeheader()
        for row in self.csv_rows():
            writer.writerow(
                {**row, "value": "" if row["value"] is None else repr(float(row["value"]))}
            )
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        tmp.replace(path)
        return path


# ------------------------------------------------------------------------------------ the experiment


def _evaluate(
    queries, corpus, labels, qrels, pools, *, pool, methods, ks, candidates
) -> EvalReport:
    if pool == "global":
        return evaluate_embeddings(
            queries,
            corpus,
            labels,
            qrels,
            query_modality=QUERY_MODALITY,
            methods=methods,
            ks=ks,
            pool=max(candidates, max(ks)),
        )
    retrieved = context_candidates(queries, corpus, labels, pools)
    return evaluate_candidates(
        retrieved,
        queries,
        corpus,
        labels,
        qrels,
        query_modality=QUERY_MODALITY,
        methods=methods,
        ks=ks,
    )


def _caption_images(
    images: Mapping[str, ImageRef], captioner: Captioner, skipped: collections.Counter
):
    """image id -> caption; images the captioner fails on are counted and left out."""
    captions: dict[str, str] = {}
    ids = list(images)
    for start in range(0, len(ids), 32):
        batch = {i: images[i] for i in ids[start : start + 32]}
        try:
            captions.update(caption_corpus(batch, captioner))
        except ValueError:  # find the culprit(s): caption the batch one image at a time
            for i, ref in batch.items():
                try:
                    captions.update(caption_corpus({i: ref}, captioner))
                except ValueError as exc:
                    skipped[f"caption: {reason_category(str(exc))}"] += 1
    return captions


def _stack_corpus(text_vectors, text_rows, image_vectors, image_rows, dim: int):
    """(corpus [N, dim], labels, {modality: {item id: corpus row}}): texts first, then images.

    ``*_rows`` are ``(item id, row in *_vectors)`` pairs of the items that could be embedded.
    """
    corpus = np.concatenate(
        [
            text_vectors[[r for _, r in text_rows]].reshape(-1, dim),
            image_vectors[[r for _, r in image_rows]].reshape(-1, dim),
        ]
    ).astype(np.float32)
    labels = np.array(["text"] * len(text_rows) + ["image"] * len(image_rows))
    row_of = {
        "text": {i: n for n, (i, _) in enumerate(text_rows)},
        "image": {i: len(text_rows) + n for n, (i, _) in enumerate(image_rows)},
    }
    return corpus, labels, row_of


def _pool_rows(query: BenchmarkQuery, row_of) -> list[int]:
    """Corpus rows of a question's own candidate pool (items that could be embedded)."""
    return [row_of[m][i] for i in query.pool_ids or () for m in MODALITIES if i in row_of[m]]


def _run_model(
    dataset, encoder, label, cache, *, pool, methods, ks, captioner, progress, candidates, log
) -> ModelResult:
    t0 = time.perf_counter()
    model_id = encoder.model_id
    skipped: collections.Counter = collections.Counter()
    dropped: collections.Counter = collections.Counter()

    def count_failures(emb: _Embedded, what: str, keys_per_item: Sequence[str]) -> None:
        for k in keys_per_item:
            if k in emb.failures:
                skipped[f"{what}: {reason_category(emb.failures[k])}"] += 1

    # Questions, passages, images: each embedded once per distinct key, cached.
    def embed(what: str, modality: str, items: list, key_of, inputs_of, desc: str):
        keys = [key_of(x) for x in items]
        emb = cache.embed(
            encoder,
            modality,
            keys,
            inputs_of(dict(zip(keys, items))),
            progress=progress,
            desc=f"{desc} [{label}]",
        )
        count_failures(emb, what, keys)
        return keys, emb

    q_keys, q_emb = embed(
        "question", "text", [q.text for q in dataset.queries], _text_key, _text_inputs, "questions"
    )
    text_ids = list(dataset.texts)
    t_keys, t_emb = embed(
        "passage", "text", [dataset.texts[i] for i in text_ids], _text_key, _text_inputs, "passages"
    )
    image_ids = list(dataset.images)
    i_keys, i_emb = embed(
        "image", "image", [dataset.images[i] for i in image_ids], _image_key, _image_inputs, "images"
    )

    # The corpus: passages that embedded, then images that embedded.
    text_rows = [(i, t_emb.row_of[k]) for i, k in zip(text_ids, t_keys) if k in t_emb.row_of]
    image_rows = [(i, i_emb.row_of[k]) for i, k in zip(image_ids, i_keys) if k in i_emb.row_of]
    dim = max(t_emb.vectors.shape[1], i_emb.vectors.shape[1], q_emb.vectors.shape[1])
    corpus, labels, row_of = _stack_corpus(t_emb.vectors, text_rows, i_emb.vectors, image_rows, dim)

    kept: list[BenchmarkQuery] = []
    q_vecs, qrel_rows, pools = [], [], []
    for q, key in zip(dataset.queries, q_keys):
        if key not in q_emb.row_of:
            dropped["question text could not be embedded"] += 1
            continue
        gold = [row_of[q.gold_modality][g] for g in q.gold_ids if g in row_of[q.gold_modality]]
        if not gold:
            dropped["all gold items dropped by the encoder"] += 1
            continue
        n = len(kept)
        kept.append(q)
        q_vecs.append(q_emb.vectors[q_emb.row_of[key]])
        qrel_rows.extend((n, g, 1) for g in gold)
        if pool == "context":
            pools.append(_pool_rows(q, row_of))
    counts = dict.fromkeys(MODALITIES, 0)
    for q in kept:
        counts[q.gold_modality] += 1
    missing = [m for m in MODALITIES if counts[m] == 0]
    if missing:
        raise ValueError(
            f"{model_id}: no {' and no '.join(missing)} questions left after dropping what the encoder "
            f"could not embed (encoder skipped: {dict(skipped) or 'nothing'}; "
            f"questions dropped: {dict(dropped) or 'none'})"
        )
    queries = np.stack(q_vecs).astype(np.float32)
    qrels = Qrels(np.asarray(qrel_rows, dtype=np.int64), len(kept))
    log(f"{label}: evaluating {len(kept)} questions against {corpus.shape[0]} corpus items")
    report = _evaluate(
        queries,
        corpus,
        labels,
        qrels,
        pools,
        pool=pool,
        methods=methods,
        ks=ks,
        candidates=candidates,
    )

    caption_info = None
    if captioner is not None:
        caption_info = _caption_baseline(
            dataset,
            encoder,
            label,
            cache,
            captioner,
            kept,
            queries,
            t_emb,
            text_rows,
            image_rows,
            pool=pool,
            ks=ks,
            candidates=candidates,
            progress=progress,
            report=report,
        )
    return ModelResult(
        model_id=model_id,
        label=label,
        report=report,
        encoder_skipped=skipped,
        dropped_queries=dropped,
        query_counts=counts,
        corpus_counts={"text": len(text_rows), "image": len(image_rows)},
        n_embedded=q_emb.n_new
        + t_emb.n_new
        + i_emb.n_new
        + (caption_info or {}).get("embedded", 0),
        n_from_cache=q_emb.n_cached
        + t_emb.n_cached
        + i_emb.n_cached
        + (caption_info or {}).get("from_cache", 0),
        seconds=time.perf_counter() - t0,
        caption_baseline=caption_info,
    )


def _caption_baseline(
    dataset,
    encoder,
    label,
    cache,
    captioner,
    kept,
    queries,
    t_emb,
    text_rows,
    image_rows,
    *,
    pool,
    ks,
    candidates,
    progress,
    report,
) -> dict:
    """Images as caption TEXT, retrieved text-to-text by raw cosine: an extra "caption-baseline" row.

    Same questions and the same (embeddable) corpus as the main run; images that cannot be captioned
    are left out, so a question whose gold images all lack a caption counts in no subset.
    """
    skipped: collections.Counter = collections.Counter()
    images = {i: dataset.images[i] for i, _ in image_rows}
    captions = _caption_images(images, captioner, skipped)
    c_ids = [i for i, _ in image_rows if i in captions]
    c_keys = [_text_key(captions[i]) for i in c_ids]
    c_emb = cache.embed(
        encoder,
        "text",
        c_keys,
        _text_inputs(dict(zip(c_keys, (captions[i] for i in c_ids)))),
        progress=progress,
        desc=f"captions [{label}]",
    )
    for k in c_keys:
        if k in c_emb.failures:
            skipped[f"caption: {reason_category(c_emb.failures[k])}"] += 1
    cap_rows = [(i, c_emb.row_of[k]) for i, k in zip(c_ids, c_keys) if k in c_emb.row_of]
    # Caption rows keep the label "image" so results split by gold modality like the main run.
    corpus, labels, row_of = _stack_corpus(
        t_emb.vectors, text_rows, c_emb.vectors, cap_rows, queries.shape[1]
    )
    qrel_rows, pools = [], []
    for n, q in enumerate(kept):
        qrel_rows.extend(
            (n, row_of[q.gold_modality][g], 1) for g in q.gold_ids if g in row_of[q.gold_modality]
        )
        if pool == "context":
            pools.append(_pool_rows(q, row_of))
    if not cap_rows:
        return {
            "captioner": getattr(captioner, "name", type(captioner).__name__),
            "captioned": 0,
            "skipped": dict(skipped),
            "embedded": c_emb.n_new,
            "from_cache": c_emb.n_cached,
            "note": "no image could be captioned; no results",
        }
    qrels = Qrels(np.asarray(qrel_rows, dtype=np.int64).reshape(-1, 3), len(kept))
    base = _evaluate(
        queries,
        corpus,
        labels,
        qrels,
        pools,
        pool=pool,
        methods=["raw"],
        ks=ks,
        candidates=candidates,
    )
    for row in base.results:
        report.results.append({**row, "method": CAPTION_METHOD})
    return {
        "captioner": getattr(captioner, "name", type(captioner).__name__),
        "captioned": len(cap_rows),
        "skipped": dict(sorted(skipped.items())),
        "embedded": c_emb.n_new,
        "from_cache": c_emb.n_cached,
    }


def _as_list(encoders_or_specs) -> list:
    if isinstance(encoders_or_specs, (str, ModelSpec)) or hasattr(encoders_or_specs, "embed_texts"):
        return [encoders_or_specs]
    return list(encoders_or_specs)


def reproduce(
    dataset: BenchmarkDataset,
    encoders_or_specs,
    *,
    pool: str | None = None,
    methods: Sequence[str] | str | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    cache_dir: str | os.PathLike | None = None,
    captioner: Captioner | None = None,
    progress: bool = True,
    limit: int | None = None,
    encoder_options: Mapping[str, Any] | None = None,
    candidates: int = DEFAULT_POOL,
    log: Callable[[str], None] | None = None,
) -> ReproduceReport:
    """Run the paper's experiment on ``dataset`` for each encoder / model spec.

    Args:
        dataset: a loaded :class:`~mmgap_core.datasets.BenchmarkDataset`.
        encoders_or_specs: encoders (anything with ``model_id``, ``embed_texts``, ``embed_images``),
            :class:`ModelSpec` or ``"NAME:TAG"`` strings (built as ``OpenClipEncoder``, one at a time;
            a model whose weights cannot be loaded is skipped with its reason), or one of these.
        pool: "context" (each question's own candidates) or "global" (whole corpus); default: the
            pool the dataset was loaded with. "context" needs a dataset loaded with per-question pools.
        methods: fusion methods (names or comma-separated string; None/"all" = every method).
        ks: Recall@K cut-offs.
        cache_dir: embedding cache folder; None disables the cache.
        captioner: adds the "caption-baseline" row: images as caption text, raw text-to-text cosine.
        progress: show tqdm progress bars (on stderr).
        limit: keep only the first ``limit`` questions of each gold modality.
        encoder_options: keyword arguments for ``OpenClipEncoder`` built from specs (device,
            batch_size, cache_dir for weights, ...).
        candidates: global pool only: candidates retrieved per modality per question before fusion.
        log: called with one-line status messages (default: silent).

    Raises:
        ValueError: bad arguments, or no model could be evaluated (the message lists each reason).
    """
    log = log or (lambda _msg: None)
    pool = pool or dataset.pool
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if pool == "context" and any(q.pool_ids is None for q in dataset.queries):
        raise ValueError(
            "pool 'context' needs a dataset loaded with pool='context' (per-question pools)"
        )
    method_names = parse_methods(
        methods if methods is None or isinstance(methods, str) else ",".join(methods)
    )
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks: expected positive cut-offs, got {ks}")
    if limit is not None:
        dataset = limit_dataset(dataset, limit)
    items = _as_list(encoders_or_specs)
    if not items:
        raise ValueError("no encoder or model spec given")
    cache = EmbeddingCache(cache_dir, log=log)
    models: dict[str, ModelResult] = {}
    skipped_models: dict[str, str] = {}
    seen_specs: set[ModelSpec] = set()
    for item in items:
        spec = ModelSpec.parse(item) if isinstance(item, str) else item
        if isinstance(spec, ModelSpec):
            label = spec.label
            if spec in seen_specs:
                skipped_models[f"{label} (again)"] = "duplicate: the same model was given twice"
                continue
            seen_specs.add(spec)
            log(f"{label}: loading the model")
            try:
                encoder = _build_encoder(spec, encoder_options or {})
            except _MODEL_LOAD_ERRORS as exc:
                skipped_models[label] = f"{type(exc).__name__}: {exc}"
                log(f"{label}: skipped: {skipped_models[label]}")
                continue
        else:
            encoder = spec
            label = str(getattr(encoder, "model_id", "") or "")
            if not label:
                raise ValueError(f"encoder {encoder!r} has no model_id (needed to key the cache)")
        if encoder.model_id in models:
            skipped_models[label] = (
                f"duplicate: same model id {encoder.model_id} as an earlier model"
            )
            continue
        try:
            result = _run_model(
                dataset,
                encoder,
                label,
                cache,
                pool=pool,
                methods=method_names,
                ks=ks,
                captioner=captioner,
                progress=progress,
                candidates=candidates,
                log=log,
            )
        except ValueError as exc:
            skipped_models[label] = str(exc)
            log(f"{label}: skipped: {exc}")
            continue
        finally:
            del encoder  # free the model before loading the next one
        models[result.model_id] = result
        log(
            f"{label}: done in {result.seconds:.1f} s ({result.n_embedded} items embedded, "
            f"{result.n_from_cache} from the cache)"
        )
    info = {
        "name": dataset.name,
        "split": dataset.split,
        "pool": pool,
        "n_queries": len(dataset.queries),
        "modality_counts": dataset.modality_counts(),
        "corpus": {"text": len(dataset.texts), "image": len(dataset.images)},
        "source_files": [str(p) for p in dataset.source_files],
        "limit_per_modality": limit,
        "summary": dataset.summary(),
    }
    return ReproduceReport(
        dataset=info,
        models=models,
        skipped_models=skipped_models,
        ks=ks,
        methods=method_names,
        pool=pool,
        dataset_skipped=dict(sorted(dataset.skipped.items())),
        captioner=None
        if captioner is None
        else str(getattr(captioner, "name", type(captioner).__name__)),
    )
