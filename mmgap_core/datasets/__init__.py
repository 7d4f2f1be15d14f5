"""Benchmark datasets for reproducing the paper's experiment: MMQA and WebQA.

``load_dataset(name, root)`` returns a :class:`BenchmarkDataset` (text queries with a gold modality,
gold ids and an optional per-question pool, plus a corpus of passages and :class:`ImageRef`).
Standard library only; images are never decoded while loading.
"""

from __future__ import annotations

from pathlib import Path

from .base import MODALITIES, POOLS, BenchmarkDataset, BenchmarkQuery, ImageRef
from .mmqa import load_mmqa
from .webqa import load_webqa

DATASET_NAMES = ("mmqa", "webqa")
DEFAULT_SPLITS = {"mmqa": "dev", "webqa": "val"}

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_SPLITS",
    "MODALITIES",
    "POOLS",
    "BenchmarkDataset",
    "BenchmarkQuery",
    "ImageRef",
    "detect_dataset",
    "load_dataset",
    "load_mmqa",
    "load_webqa",
]


def detect_dataset(root: str | Path) -> str:
    """Name of the dataset in ``root`` ("mmqa" or "webqa"), from the files it holds.

    Raises:
        ValueError: ``root`` is not a folder, holds neither dataset, or holds both.
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
    if not found:
        names = sorted(p.name for p in root.iterdir())[:10]
        raise ValueError(f"no recognisable dataset in {root}: {hint} (found: {names or 'nothing'})")
    if len(found) > 1:
        raise ValueError(
            f"{root} holds both MMQA and WebQA files; pass the dataset name explicitly"
        )
    return found[0]


def load_dataset(
    name: str | None, root: str | Path, split: str | None = None, pool: str = "context"
) -> BenchmarkDataset:
    """Load benchmark ``name`` ("mmqa", "webqa", or None/"auto" to detect it) from ``root``.

    ``split`` defaults to "dev" for MMQA and "val" for WebQA; ``pool`` is "context" or "global".
    """
    if name is None or name == "auto":
        name = detect_dataset(root)
    key = name.lower()
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES} or 'auto'")
    split = split or DEFAULT_SPLITS[key]
    loader = load_mmqa if key == "mmqa" else load_webqa
    return loader(root, split=split, pool=pool)
