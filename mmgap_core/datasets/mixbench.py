"""MixBench (GR-CLIP, Li et al. 2025) as a benchmark.

The data: hf.co/datasets/mixed-modality-search/MixBench25.

Text queries retrieve from a corpus of three kinds of item: texts, images, and multimodal documents
(a text and an image embedded together). Layout read (``--root`` is the folder holding the subset
folders, i.e. a clone of the hub repository; ``--root`` may also be the subset folder itself)::

    ROOT/SUBSET/                         SUBSET: MSCOCO, Google_WIT, VisualNews or OVEN
        query.{jsonl,parquet}            {"query_id", "text"}
        corpus.{jsonl,parquet}           {"corpus_id", "text", "image"}
        qrel.{jsonl,parquet}             {"query_id", "corpus_id", "score"}
        mixed_corpus.{jsonl,parquet}     optional; {"corpus_id", "text", "image"}
        images/                          the files the "image" fields name

Each split is read from ``STEM.jsonl``, ``STEM.jsonl.gz``, ``STEM.parquet`` or sharded
``STEM-*.parquet`` (first found, in that order); ``qrels`` and ``queries`` are accepted as stems
too. Parquet needs the optional ``pyarrow`` (``pip install "mmgap[parquet]"``). Every record may
carry all five hub fields (``query_id``, ``corpus_id``, ``text``, ``image``, ``score``); the
unused ones are ignored. ``image`` is a path relative to ``SUBSET/images/``.

Corpus kinds. With ``mixed_corpus`` its items are the corpus: an item with a text and an image is
multimodal, one with only a text is a text, one with only an image is an image (an explicit
``modality`` field, ``text`` / ``image`` / ``multimodal`` or ``mixed``, wins). Without it, the
items of ``corpus`` that have both a text and an image file are assigned text, image and
multimodal 1:1:1 by GR-CLIP's rule (``random.seed(42)``; ``perm = random.sample(range(n), n)``;
item ``perm[i]`` gets ``["text", "image", "multimodal"][i % 3]``; github.com/yuhui-zh15/
MixedModalitySearch, ``src/retrieval_mixbench.py``), in file order after dropping the items
without both (GR-CLIP drops items whose text or image embedding is missing).

Qrels: ``score > 0`` marks a relevant item (graded, as nDCG uses it); a relevant id that is not in
the corpus (skipped, or absent) is dropped from the query's gold items, and a query left with none
is skipped. A query's gold kind is its gold items' kind ("mixed" if they span several).

Bad input is counted in ``BenchmarkDataset.skipped`` by reason and loading goes on: malformed JSON
lines, empty texts, image paths outside the image folder, missing image files (a multimodal item
whose image is missing is skipped), duplicate ids. A record without its id field raises
``ValueError`` naming the file and line; a missing split file or image folder raises
``FileNotFoundError``. Only the global pool exists (MixBench has no per-query pools).
"""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import Iterator
from pathlib import Path

from .base import KINDS, BenchmarkDataset, BenchmarkQuery, DocumentRef, ImageRef, iter_jsonl
from .paths import UnsafePathError, confined_path, resolve_folder

__all__ = ["MIXBENCH_SUBSETS", "SPLIT_STEMS", "assign_kinds", "find_split", "load_mixbench"]

logger = logging.getLogger(__name__)

MIXBENCH_SUBSETS = ("MSCOCO", "Google_WIT", "VisualNews", "OVEN")
SPLIT_STEMS = {
    "query": ("query", "queries"),
    "corpus": ("corpus",),
    "qrel": ("qrel", "qrels"),
    "mixed_corpus": ("mixed_corpus",),
}
IMAGE_DIR = "images"
ASSIGN_SEED = 42
PARQUET_HINT = 'pip install "mmgap[parquet]"'

SKIP_IMAGE_MISSING = "image file missing"
SKIP_NO_KIND = "corpus item has neither text nor image"
_KIND_ALIASES = {
    "text": "text",
    "image": "image",
    "multimodal": "multimodal",
    "mixed": "multimodal",
}


def find_split(folder: Path, split: str) -> Path | None:
    """Return the file holding one MixBench split, or None.

    Parameters
    ----------
    folder : pathlib.Path
        The subset folder.
    split : {"query", "corpus", "qrel", "mixed_corpus"}
        The split.

    Returns
    -------
    pathlib.Path or None
        The first of ``STEM.jsonl``, ``STEM.jsonl.gz``, ``STEM.parquet``, ``STEM-*.parquet``
        (first shard) that exists, for each accepted stem in turn.
    """
    for stem in SPLIT_STEMS[split]:
        for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz", f"{stem}.parquet"):
            if (folder / name).is_file():
                return folder / name
        shards = sorted(folder.glob(f"{stem}-*.parquet"))
        if shards:
            return shards[0]
    return None


def _parquet_files(path: Path) -> list[Path]:
    stem = path.name.split("-", 1)[0]
    if path.name.startswith(f"{stem}-"):
        return sorted(path.parent.glob(f"{stem}-*.parquet"))
    return [path]


def iter_records(path: Path, skipped: collections.Counter) -> Iterator[tuple[int, dict]]:
    """Yield ``(line or row number, record)`` from a jsonl(.gz) file or parquet file(s).

    Parameters
    ----------
    path : pathlib.Path
        A file found by :func:`find_split`; a sharded parquet split is read shard by shard.
    skipped : collections.Counter
        Counts malformed JSON lines.

    Yields
    ------
    tuple of (int, dict)

    Raises
    ------
    ImportError
        A parquet file without ``pyarrow`` installed (the message names the extra to install).
    ValueError
        A parquet file that cannot be read.
    """
    if not path.name.endswith(".parquet"):
        yield from iter_jsonl(path, skipped)
        return
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(f"MixBench: reading {path.name} needs pyarrow: {PARQUET_HINT}") from exc
    number = 0
    for file in _parquet_files(path):
        try:
            batches = pq.ParquetFile(file).iter_batches(batch_size=4096)
            for batch in batches:
                for record in batch.to_pylist():
                    number += 1
                    yield number, record
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"MixBench: cannot read {file}: {exc}") from None


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def _id(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{where}: missing field {key!r}")
    return str(value)


def assign_kinds(ids: list[str], seed: int = ASSIGN_SEED) -> dict[str, str]:
    """Assign corpus items to text, image and multimodal 1:1:1, as GR-CLIP's script does.

    Parameters
    ----------
    ids : list of str
        The items with both a text and an image, in file order.
    seed : int, default 42
        The seed of Python's ``random`` (GR-CLIP: ``random.seed(42)``).

    Returns
    -------
    dict of str to str
        Item id -> kind: ``perm = Random(seed).sample(range(n), n)``; item ``perm[i]`` gets
        ``KINDS[i % 3]`` (GR-CLIP's ``["text", "image", "mixed"][i % 3]``).
    """
    perm = random.Random(seed).sample(range(len(ids)), len(ids))
    return {ids[p]: KINDS[i % 3] for i, p in enumerate(perm)}


class _Images:
    """Resolves ``image`` fields inside the subset's image folder, counting what is skipped."""

    def __init__(self, folder: Path, skipped: collections.Counter):
        self.folder, self.base, self.skipped = folder, resolve_folder(folder), skipped

    def ref(self, item_id: str, name, kind: str, where: str) -> ImageRef | None:
        try:
            path = confined_path(self.base, str(name))
        except UnsafePathError as exc:
            self.skipped[f"{kind} item: {exc.reason}"] += 1
            logger.warning("MixBench: %s (corpus id %r): %s; skipped", where, item_id, exc)
            return None
        if not path.is_file():  # existence only: loading never decodes pixels
            self.skipped[f"{kind} item: {SKIP_IMAGE_MISSING}"] += 1
            return None
        return ImageRef(id=item_id, title="", path=self.folder / str(name))


def _subset_folder(root: Path, subset: str) -> Path:
    if subset not in MIXBENCH_SUBSETS:
        raise ValueError(f"unknown MixBench subset {subset!r}; choose from {MIXBENCH_SUBSETS}")
    for folder in (root / subset, root):
        if folder.is_dir() and find_split(folder, "query") is not None:
            return folder
    found = sorted(p.name for p in root.iterdir())[:12] if root.is_dir() else []
    raise FileNotFoundError(
        f"MixBench: no query split for subset {subset} under {root}: expected "
        f"{root / subset}/query.jsonl (or .parquet) (found: {found or 'nothing'})"
    )


def _required(folder: Path, split: str) -> Path:
    path = find_split(folder, split)
    if path is None:
        stems = " or ".join(SPLIT_STEMS[split])
        raise FileNotFoundError(
            f"MixBench: the {split} split ({stems}.jsonl or .parquet) is missing in {folder}"
        )
    return path


def _read_queries(path: Path, skipped: collections.Counter) -> dict[str, str]:
    queries: dict[str, str] = {}
    for line, record in iter_records(path, skipped):
        qid = _id(record, "query_id", f"{path.name} line {line}")
        text = _text(record.get("text"))
        if not text:
            skipped["empty query text"] += 1
        elif qid in queries:
            skipped["duplicate query id"] += 1
        else:
            queries[qid] = text
    return queries


def _read_corpus(path: Path, images: _Images, mixed: bool, skipped: collections.Counter):
    """(texts, image refs, documents) of the corpus split or of mixed_corpus (see module doc)."""
    texts: dict[str, str] = {}
    refs: dict[str, ImageRef] = {}
    docs: dict[str, DocumentRef] = {}
    pairs: list[tuple[str, str, ImageRef]] = []
    seen: set[str] = set()
    for line, record in iter_records(path, skipped):
        where = f"{path.name} line {line}"
        cid = _id(record, "corpus_id", where)
        if cid in seen:
            skipped["duplicate corpus id"] += 1
            continue
        seen.add(cid)
        text, image = _text(record.get("text")), record.get("image")
        has_image = isinstance(image, str) and bool(image.strip())
        kind = _KIND_ALIASES.get(str(record.get("modality") or "").lower()) if mixed else None
        if kind is None:
            kind = "multimodal" if text and has_image else "text" if text else "image"
        if not mixed:
            kind = "multimodal"  # GR-CLIP keeps only items with both, then assigns kinds
        label = kind if mixed else "corpus"
        if not text and not has_image:
            skipped[SKIP_NO_KIND] += 1
            continue
        if kind != "image" and not text:
            skipped[f"{label} item: empty text"] += 1
            continue
        if kind != "text" and not has_image:
            skipped[f"{label} item: no image field"] += 1
            continue
        ref = images.ref(cid, image, label, where) if kind != "text" else None
        if kind != "text" and ref is None:
            continue
        if not mixed:
            pairs.append((cid, text, ref))
        elif kind == "text":
            texts[cid] = text
        elif kind == "image":
            refs[cid] = ref
        else:
            docs[cid] = DocumentRef(cid, text, ref)
    if not mixed:
        kinds = assign_kinds([cid for cid, _, _ in pairs])
        for cid, text, ref in pairs:
            if kinds[cid] == "text":
                texts[cid] = text
            elif kinds[cid] == "image":
                refs[cid] = ref
            else:
                docs[cid] = DocumentRef(cid, text, ref)
    return texts, refs, docs


def _read_qrels(path: Path, skipped: collections.Counter) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line, record in iter_records(path, skipped):
        where = f"{path.name} line {line}"
        qid, cid = _id(record, "query_id", where), _id(record, "corpus_id", where)
        score = record.get("score", 1)
        score = 1 if score is None else score
        try:
            score = int(score)
        except (TypeError, ValueError):
            skipped["qrel score not an integer"] += 1
            continue
        if score > 0:
            qrels.setdefault(qid, {})[cid] = score
    return qrels


def load_mixbench(
    root: str | Path, subset: str = "MSCOCO", pool: str = "global", *, use_mixed_corpus: bool = True
) -> BenchmarkDataset:
    """Load a MixBench subset as a three-kind retrieval benchmark (see the module docstring).

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding ``SUBSET/`` (a clone of the hub repository), or the subset folder.
    subset : {"MSCOCO", "Google_WIT", "VisualNews", "OVEN"}, default "MSCOCO"
        The subset.
    pool : {"global"}, default "global"
        MixBench has no per-query pools: the whole corpus is every query's pool.
    use_mixed_corpus : bool, default True
        Read the corpus kinds from ``mixed_corpus`` when the subset has it; False: always assign
        them from ``corpus`` by GR-CLIP's seeded rule.

    Returns
    -------
    BenchmarkDataset
        ``kinds`` is :data:`~mmgap_core.datasets.base.KINDS`; ``documents`` holds the multimodal
        items; ``skipped`` counts what was dropped, by reason.

    Raises
    ------
    FileNotFoundError
        The subset folder, a required split or the image folder is missing.
    ValueError
        Unknown subset, a pool other than "global", a record without its id, or no query left.
    ImportError
        A split is parquet and ``pyarrow`` is not installed.
    """
    if pool != "global":
        raise ValueError(f"MixBench has no per-question pools: use pool 'global', not {pool!r}")
    root = Path(root)
    folder = _subset_folder(root, subset)
    image_dir = folder / IMAGE_DIR
    if not image_dir.is_dir():
        raise FileNotFoundError(f"MixBench: no image folder {image_dir}")
    query_file, qrel_file = _required(folder, "query"), _required(folder, "qrel")
    mixed_file = find_split(folder, "mixed_corpus") if use_mixed_corpus else None
    corpus_file = mixed_file or _required(folder, "corpus")

    skipped: collections.Counter = collections.Counter()
    questions = _read_queries(query_file, skipped)
    texts, refs, docs = _read_corpus(
        corpus_file, _Images(image_dir, skipped), mixed_file is not None, skipped
    )
    kind_of = {**dict.fromkeys(texts, "text"), **dict.fromkeys(refs, "image")}
    kind_of.update(dict.fromkeys(docs, "multimodal"))
    qrels = _read_qrels(qrel_file, skipped)
    for qid in set(qrels) - set(questions):
        skipped["qrel of a missing or skipped query"] += len(qrels[qid])
    queries: list[BenchmarkQuery] = []
    for qid, text in questions.items():
        judged = qrels.get(qid, {})
        gold = {c: s for c, s in judged.items() if c in kind_of}
        if len(gold) < len(judged):
            skipped["relevant corpus id not in the corpus"] += len(judged) - len(gold)
        if not gold:
            skipped["query without a relevant corpus item"] += 1
            continue
        kinds = {kind_of[c] for c in gold}
        kind = kinds.pop() if len(kinds) == 1 else "mixed"
        queries.append(BenchmarkQuery(qid, text, kind, tuple(gold), None, tuple(gold.values())))
    if not queries:
        raise ValueError(
            f"MixBench {subset}: no query with a relevant corpus item is left after loading "
            f"(skipped: {dict(sorted(skipped.items())) or 'nothing'})"
        )
    source = mixed_file.name if mixed_file else f"{corpus_file.name}, seeded 1:1:1 (seed 42)"
    return BenchmarkDataset(
        name="mixbench",
        split=subset,
        pool="global",
        queries=queries,
        texts=texts,
        images=refs,
        skipped=skipped,
        source_files=[query_file, corpus_file, qrel_file],
        documents=docs,
        kinds=KINDS,
        meta={"subset": subset, "corpus_kinds_from": source},
    )
