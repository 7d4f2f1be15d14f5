"""Common types for benchmark datasets (MMQA, WebQA, MixBench) used by ``mmgap reproduce``.

A benchmark is a list of text queries, each with a gold modality ("text", "image" or, in MixBench,
"multimodal"), the ids of its gold corpus items and, in the *context* setting, its own candidate
pool. The corpus is a dict of text passages, a dict of :class:`ImageRef` (where the image bytes
live) and, for MixBench, a dict of :class:`DocumentRef` (a text and an image embedded together).
Loading never decodes pixels: it only checks that image files / records exist.

Everything here is standard library only.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MODALITIES = ("text", "image")
KINDS = ("text", "image", "multimodal")  # corpus item kinds of a three-kind benchmark (MixBench)
POOLS = ("context", "global")


@dataclass(frozen=True)
class BenchmarkQuery:
    """One benchmark question.

    Attributes
    ----------
    id : str
        The question id of the source file.
    text : str
        The question, used as a text query.
    gold_modality : {"text", "image", "multimodal", "mixed"}
        The kind of the gold items ("mixed": MixBench gold items of several kinds).
    gold_ids : tuple of str
        Corpus ids of the gold items (passage ids for text questions, image ids for image ones).
    pool_ids : tuple of str or None
        The question's own candidate pool (text and image ids mixed) in the context setting;
        ``None`` in the global setting, where the whole corpus is the pool.
    gold_scores : tuple of int or None
        Graded relevance of each gold id (MixBench's qrel ``score``); ``None``: all 1.
    """

    id: str
    text: str
    gold_modality: str
    gold_ids: tuple[str, ...]
    pool_ids: tuple[str, ...] | None = None
    gold_scores: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ImageRef:
    """Where one corpus image's encoded bytes live: a file (MMQA) or a base64 TSV line (WebQA).

    Attributes
    ----------
    id : str
        The image's corpus id.
    title : str
        The image's title from the dataset's metadata (may be empty).
    path : pathlib.Path or None
        The image file (MMQA); the loader has checked that it lies inside the image folder.
    tsv, offset : pathlib.Path and int, or None
        The TSV store and the byte offset of the image's ``id<TAB>base64`` line (WebQA).
    """

    id: str
    title: str
    path: Path | None = None
    tsv: Path | None = None
    offset: int | None = None

    def load_bytes(self) -> bytes:
        """Return the encoded image bytes (JPEG/PNG/...), not decoded pixels.

        Returns
        -------
        bytes
            The file's bytes, or the base64-decoded payload of the TSV line.

        Raises
        ------
        FileNotFoundError
            The image file or the TSV store does not exist.
        ValueError
            The reference has no location, or the TSV line is malformed, holds another image id
            or is not valid base64.
        """
        if self.path is not None:
            if not self.path.is_file():
                raise FileNotFoundError(f"image {self.id!r}: file {self.path} not found")
            return self.path.read_bytes()
        if self.tsv is not None and self.offset is not None:
            return _read_tsv_image(self.tsv, self.offset, self.id)
        raise ValueError(f"image {self.id!r}: ImageRef has neither a path nor a tsv+offset")


@dataclass(frozen=True)
class DocumentRef:
    """A multimodal corpus item (MixBench): a text and an image, embedded as one vector.

    Attributes
    ----------
    id : str
        The item's corpus id.
    text : str
        The item's text.
    image : ImageRef
        The item's image; the loader has checked that the file exists inside the image folder.
    """

    id: str
    text: str
    image: ImageRef


def _read_tsv_image(tsv: Path, offset: int, image_id: str) -> bytes:
    if not tsv.is_file():
        raise FileNotFoundError(f"image {image_id!r}: image store {tsv} not found")
    with tsv.open("rb") as fh:
        fh.seek(offset)
        line = fh.readline().rstrip(b"\r\n")
    stored_id, sep, payload = line.partition(b"\t")
    if not sep:
        raise ValueError(f"image {image_id!r}: no 'id<TAB>base64' line at offset {offset} of {tsv}")
    if stored_id.decode("ascii", "replace").strip() != image_id:
        raise ValueError(
            f"image {image_id!r}: line at offset {offset} of {tsv} holds image "
            f"{stored_id.decode('ascii', 'replace')!r} instead"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"image {image_id!r}: invalid base64 in {tsv} at offset {offset}") from exc


@dataclass
class BenchmarkDataset:
    """A loaded benchmark split: queries plus the corpus they retrieve from.

    In the context setting the corpus holds exactly the items that some kept query's pool
    references; in the global setting it holds every usable item.

    Attributes
    ----------
    name, split, pool : str
        Dataset name ("mmqa", "webqa", "mixbench"), split ("dev", "val", ...; MixBench: the
        subset) and pool ("context", "global").
    queries : list of BenchmarkQuery
        The kept questions, in file order.
    texts : dict of str to str
        Passage id -> passage text (``title + ". " + text``).
    images : dict of str to ImageRef
        Image id -> where its bytes live.
    skipped : collections.Counter
        What was dropped while loading, by reason (shown by :meth:`summary` and in reports).
    source_files : list of pathlib.Path
        The metadata files read.
    documents : dict of str to DocumentRef
        Multimodal item id -> its text and image (MixBench only; empty otherwise).
    kinds : tuple of str
        The corpus item kinds: :data:`MODALITIES`, or :data:`KINDS` for MixBench. With the two
        modalities every kind must keep a question (the paper's same- vs cross-modal split).
    meta : dict
        Loader facts reported with the results (MixBench: subset, where the kinds came from).
    """

    name: str
    split: str
    pool: str
    queries: list[BenchmarkQuery]
    texts: dict[str, str]
    images: dict[str, ImageRef]
    skipped: collections.Counter = field(default_factory=collections.Counter)
    source_files: list[Path] = field(default_factory=list)
    documents: dict[str, DocumentRef] = field(default_factory=dict)
    kinds: tuple[str, ...] = MODALITIES
    meta: dict = field(default_factory=dict)

    def corpus_counts(self) -> dict[str, int]:
        """Count the corpus items per kind.

        Returns
        -------
        dict of str to int
            ``{"text": passages, "image": images}``, plus ``"multimodal"`` for three kinds.
        """
        counts = {"text": len(self.texts), "image": len(self.images)}
        if "multimodal" in self.kinds:
            counts["multimodal"] = len(self.documents)
        return counts

    def modality_counts(self) -> dict[str, int]:
        """Count the queries per gold modality.

        Returns
        -------
        dict of str to int
            ``{"text": n, "image": m}`` (and ``"multimodal"``, ``"mixed"`` where they occur).
        """
        counts = dict.fromkeys(self.kinds, 0)
        for query in self.queries:
            counts[query.gold_modality] = counts.get(query.gold_modality, 0) + 1
        return counts

    def summary(self) -> str:
        """Describe the split: queries per modality, corpus size, skipped items per reason.

        Returns
        -------
        str
            A few human-readable lines.
        """
        counts = self.modality_counts()
        if self.kinds == MODALITIES:
            head = (
                f"{self.name} {self.split} ({self.pool} pool): {len(self.queries)} queries "
                f"({counts['text']} text, {counts['image']} image); corpus {len(self.texts)} "
                f"passages + {len(self.images)} images"
            )
        else:
            gold = ", ".join(f"{n} {k}" for k, n in counts.items())
            corpus = " + ".join(f"{n} {k}" for k, n in self.corpus_counts().items())
            head = (
                f"{self.name} {self.split} ({self.pool} pool): {len(self.queries)} queries "
                f"(gold kind: {gold}); corpus {corpus} items"
            )
        lines = [head]
        lines += [f"  {k.replace('_', ' ')}: {v}" for k, v in self.meta.items() if k != "subset"]
        if self.pool == "context" and self.queries:
            sizes = [len(q.pool_ids or ()) for q in self.queries]
            lines.append(
                f"  pool size per query: min {min(sizes)}, mean {sum(sizes) / len(sizes):.1f}, "
                f"max {max(sizes)}"
            )
        if self.skipped:
            lines.append("  skipped:")
            for reason, n in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"    {n:6d}  {reason}")
        else:
            lines.append("  skipped: nothing")
        return "\n".join(lines)


# ---------------------------------------------------------------- helpers shared by the loaders


def check_pool(pool: str) -> str:
    """Return ``pool`` if it is one of :data:`POOLS`.

    Raises
    ------
    ValueError
        For any other value.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    return pool


def find_jsonl(root: Path, stem: str) -> Path | None:
    """Return ``root/stem.jsonl.gz`` or ``root/stem.jsonl``, whichever exists (gzip first)."""
    for candidate in (root / f"{stem}.jsonl.gz", root / f"{stem}.jsonl"):
        if candidate.is_file():
            return candidate
    return None


def iter_jsonl(path: Path, skipped: collections.Counter) -> Iterator[tuple[int, dict]]:
    """Read the JSON-object lines of a (gzipped) jsonl file.

    Blank lines are ignored; lines that are not a JSON object are counted in ``skipped`` under
    ``"malformed JSON line (<file name>)"`` and loading goes on.

    Parameters
    ----------
    path : Path
        A ``.jsonl`` or ``.jsonl.gz`` file.
    skipped : collections.Counter
        Skip reasons, updated in place.

    Yields
    ------
    (int, dict)
        The 1-based line number and the record.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                skipped[f"malformed JSON line ({path.name})"] += 1
                continue
            yield number, record


def require(record: dict, key: str, where: str):
    """Return ``record[key]``.

    Raises
    ------
    ValueError
        Naming the field and ``where`` when it is missing or ``record`` is no JSON object.
    """
    try:
        return record[key]
    except KeyError:
        raise ValueError(f"{where}: missing field {key!r}") from None
    except TypeError:
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}") from None


def passage_text(title: str, text: str) -> str:
    """Return the text indexed for a passage: ``title + ". " + text`` (``text`` if no title)."""
    title = (title or "").strip()
    text = (text or "").strip()
    return f"{title}. {text}" if title else text


def unique(ids) -> tuple[str, ...]:
    """Return ``ids`` without duplicates, in first-seen order."""
    return tuple(dict.fromkeys(ids))


def check_both_modalities(dataset: BenchmarkDataset) -> None:
    """Refuse a loaded split without queries of both modalities.

    Raises
    ------
    ValueError
        Naming the missing modality, the counts and the skip reasons.
    """
    counts = dataset.modality_counts()
    missing = [m for m in MODALITIES if counts.get(m, 0) == 0]
    if missing:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(dataset.skipped.items())) or "none"
        raise ValueError(
            f"{dataset.name} split {dataset.split!r} has no {' and no '.join(missing)} questions "
            f"after loading ({counts['text']} text, {counts['image']} image); "
            f"skipped: {skipped}"
        )


SKIP_GOLD_MISSING = "gold id not in corpus"


@dataclass(frozen=True)
class QuestionCandidate:
    """A parsed question before its gold ids are checked against the corpus.

    Attributes
    ----------
    qid, text, modality : str
        The question's id, text and gold modality.
    gold_ids, context_ids : tuple of str
        Its relevant corpus ids, and the ids its context pool cites.
    """

    qid: str
    text: str
    modality: str
    gold_ids: tuple[str, ...]
    context_ids: tuple[str, ...]


def assemble_dataset(
    name: str,
    split: str,
    pool: str,
    candidates: list[QuestionCandidate],
    texts: dict[str, str],
    images: dict[str, ImageRef],
    skipped: collections.Counter,
    source_files: list[Path],
) -> BenchmarkDataset:
    """Build the dataset from parsed questions and the corpus.

    Keeps the questions whose gold items are all in the corpus, builds their pools (context
    setting), drops corpus items no kept pool cites, and checks that both modalities remain.

    Parameters
    ----------
    name, split, pool : str
        The benchmark, its split and the pool setting (one of :data:`POOLS`).
    candidates : list of QuestionCandidate
        The parsed questions.
    texts, images : dict
        The corpus: id -> passage text, id -> :class:`ImageRef`.
    skipped : collections.Counter
        Skip reasons, updated in place.
    source_files : list of Path
        The files read, for the record.

    Returns
    -------
    BenchmarkDataset

    Raises
    ------
    ValueError
        When no question of one modality remains (:func:`check_both_modalities`).
    """
    queries: list[BenchmarkQuery] = []
    for cand in candidates:
        corpus = texts if cand.modality == "text" else images
        if any(g not in corpus for g in cand.gold_ids):
            skipped[SKIP_GOLD_MISSING] += 1
            continue
        pool_ids = None
        if pool == "context":
            pool_ids = tuple(i for i in cand.context_ids if i in texts or i in images)
        queries.append(BenchmarkQuery(cand.qid, cand.text, cand.modality, cand.gold_ids, pool_ids))

    if pool == "context":  # drop items only cited by skipped questions
        used = {i for q in queries for i in q.pool_ids or ()}
        texts = {k: v for k, v in texts.items() if k in used}
        images = {k: v for k, v in images.items() if k in used}

    dataset = BenchmarkDataset(
        name=name,
        split=split,
        pool=pool,
        queries=queries,
        texts=texts,
        images=images,
        skipped=skipped,
        source_files=source_files,
    )
    check_both_modalities(dataset)
    return dataset


def limit_dataset(dataset: BenchmarkDataset, per_modality: int) -> BenchmarkDataset:
    """Keep the first ``per_modality`` questions of each gold modality (file order).

    Parameters
    ----------
    dataset : BenchmarkDataset
        A loaded split.
    per_modality : int
        Questions to keep per gold modality, at least 1.

    Returns
    -------
    BenchmarkDataset
        A new dataset. In the context setting the corpus shrinks to the kept questions' pools; in
        the global setting it stays whole (only the questions are limited).

    Raises
    ------
    ValueError
        ``per_modality`` is not a positive integer.
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
    return dataclasses.replace(
        dataset,
        queries=kept,
        texts=texts,
        images=images,
        skipped=collections.Counter(dataset.skipped),
        source_files=list(dataset.source_files),
        documents=dict(dataset.documents),
        meta=dict(dataset.meta),
    )
