"""Benchmark datasets for ``mmgap reproduce``: MMQA, WebQA and MixBench.

``load_dataset(name, root)`` returns a :class:`BenchmarkDataset` (text queries with a gold modality,
gold ids and an optional per-question pool, plus a corpus of passages, :class:`ImageRef` and, for
MixBench, multimodal :class:`DocumentRef`). Standard library only (MixBench's parquet files need
the optional ``pyarrow``); images are never decoded while loading.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    KINDS,
    MODALITIES,
    POOLS,
    BenchmarkDataset,
    BenchmarkQuery,
    DocumentRef,
    ImageRef,
    limit_dataset,
)
from .mixbench import MIXBENCH_SUBSETS, find_split, load_mixbench
from .mmqa import load_mmqa
from .paths import UnsafePathError, confined_path
from .webqa import load_webqa

DATASET_NAMES = ("mmqa", "webqa", "mixbench")
DEFAULT_SPLITS = {"mmqa": "dev", "webqa": "val"}
DEFAULT_POOLS = {"mmqa": "context", "webqa": "context", "mixbench": "global"}
_LABELS = {"mmqa": "MMQA", "webqa": "WebQA", "mixbench": "MixBench"}

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_POOLS",
    "DEFAULT_SPLITS",
    "KINDS",
    "MIXBENCH_SUBSETS",
    "MODALITIES",
    "POOLS",
    "BenchmarkDataset",
    "BenchmarkQuery",
    "DocumentRef",
    "ImageRef",
    "UnsafePathError",
    "confined_path",
    "detect_dataset",
    "limit_dataset",
    "load_dataset",
    "load_mixbench",
    "load_mmqa",
    "load_webqa",
]


def detect_dataset(root: str | Path) -> str:
    """Detect which benchmark ``root`` holds, from its file names.

    Parameters
    ----------
    root : str or os.PathLike
        The dataset folder.

    Returns
    -------
    str
        ``"mmqa"``, ``"webqa"`` or ``"mixbench"`` (a folder holding MixBench subset folders).

    Raises
    ------
    ValueError
        ``root`` is not a folder, holds neither dataset, or holds both.
    """
    root = Path(root)
    hint = "expected MMQA_*.jsonl.gz or WebQA_train_val.json"
    if not root.is_dir():
        raise ValueError(f"no recognisable dataset in {root}: not a directory ({hint})")
    found = []
    if any(root.glob("MMQA_*.jsonl.gz")) or any(root.glob("MMQA_*.jsonl")):
        found.append("mmqa")
    if (root / "WebQA_train_val.json").is_file():
        found.append("webqa")
    if any(find_split(root / s, "query") for s in MIXBENCH_SUBSETS if (root / s).is_dir()):
        found.append("mixbench")
    if not found:
        names = sorted(p.name for p in root.iterdir())[:10]
        raise ValueError(f"no recognisable dataset in {root}: {hint} (found: {names or 'nothing'})")
    if len(found) > 1:
        raise ValueError(
            f"{root} holds {'both ' if len(found) == 2 else ''}"
            f"{' and '.join(_LABELS[f] for f in found)} files; pass the dataset name explicitly"
        )
    return found[0]


def load_dataset(
    name: str | None,
    root: str | Path,
    split: str | None = None,
    pool: str | None = "context",
    *,
    subset: str | None = None,
) -> BenchmarkDataset:
    """Load a benchmark split from ``root``.

    Parameters
    ----------
    name : {"mmqa", "webqa", "mixbench", "auto"} or None
        The benchmark; ``None`` or ``"auto"`` detects it (:func:`detect_dataset`).
    root : str or os.PathLike
        The dataset folder.
    split : str, optional
        Defaults to ``"dev"`` for MMQA and ``"val"`` for WebQA; MixBench has none (see
        ``subset``).
    pool : {"context", "global"} or None, default "context"
        Each question's own candidates, or the whole corpus; None: the dataset's default
        (:data:`DEFAULT_POOLS`). MixBench only has "global".
    subset : str, optional
        MixBench's subset (:data:`MIXBENCH_SUBSETS`); required for MixBench, refused otherwise.

    Returns
    -------
    BenchmarkDataset
        See :func:`load_mmqa`, :func:`load_webqa` and :func:`load_mixbench`.

    Raises
    ------
    ValueError
        Unknown ``name``, or the loader's own errors.
    FileNotFoundError
        A required file is missing.
    """
    if name is None or name == "auto":
        name = detect_dataset(root)
    key = name.lower()
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES} or 'auto'")
    pool = pool or DEFAULT_POOLS[key]
    if key == "mixbench":
        if split is not None:
            raise ValueError("MixBench has no split to choose: name the subset instead")
        if subset is None:
            raise ValueError(f"MixBench needs a subset: one of {', '.join(MIXBENCH_SUBSETS)}")
        return load_mixbench(root, subset, pool=pool)
    if subset is not None:
        raise ValueError(f"a subset applies to MixBench only, not to {key}")
    split = split or DEFAULT_SPLITS[key]
    loader = load_mmqa if key == "mmqa" else load_webqa
    return loader(root, split=split, pool=pool)
