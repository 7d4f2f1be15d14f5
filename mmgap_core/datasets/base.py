"""Common types for benchmark datasets (MMQA, WebQA) used to reproduce the paper's experiment.

A benchmark is a list of text queries, each with a gold modality ("text" or "image"), the ids of its
gold corpus items and, in the *context* setting, its own candidate pool. The corpus is a dict of text
passages plus a dict of :class:`ImageRef` (where the image bytes live). Loading never decodes pixels:
it only checks that image files / records exist.

Everything here is standard library only.
"""

from __future__ import annotations

import base64
import binascii
import collections
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MODALITIES = ("text", "image")
POOLS = ("context", "global")


@dataclass(frozen=True)
class BenchmarkQuery:
    """One benchmark question.

    ``gold_ids`` are corpus ids (passage ids for text questions, image ids for image questions).
    ``pool_ids`` is the per-question candidate pool (text and image ids mixed) in the context
    setting, ``None`` in the global setting (the whole corpus is the pool).
    """

    id: str
    text: str
    gold_modality: str
    gold_ids: tuple[str, ...]
    pool_ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ImageRef:
    """Where one corpus image's encoded bytes live: a file (MMQA) or a base64 TSV line (WebQA)."""

    id: str
    title: str
    path: Path | None = None
    tsv: Path | None = None
    offset: int | None = None

    def load_bytes(self) -> bytes:
        """Return the encoded image bytes (JPEG/PNG/...), not decoded pixels.

        Raises:
            FileNotFoundError: the image file or the TSV store does not exist.
            ValueError: the reference has no location, or the TSV line is malformed / holds
                another image id / is not valid base64.
        """
        if self.path is not None:
            if not self.path.is_file():
                raise FileNotFoundError(f"image {self.id!r}: file {self.path} not found")
            return self.path.read_bytes()
        if self.tsv is not None and self.offset is not None:
            return _read_tsv_image(self.tsv, self.offset, self.id)
        raise ValueError(f"image {self.id!r}: ImageRef has neither a path nor a tsv+offset")


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

    ``texts`` maps passage id -> passage text (``title + ". " + text``); ``images`` maps image id ->
    :class:`ImageRef`. In the context setting the corpus holds exactly the items that some kept
    query's pool references; in the global setting it holds every usable item.
    ``skipped`` counts what was dropped while loading, by reason; ``source_files`` lists the
    metadata files read (useful as a key for embedding caches).
    """

    name: str
    split: str
    pool: str
    queries: list[BenchmarkQuery]
    texts: dict[str, str]
    images: dict[str, ImageRef]
    skipped: collections.Counter = field(default_factory=collections.Counter)
    source_files: list[Path] = field(default_factory=list)

    def modality_counts(self) -> dict[str, int]:
        """Number of queries per gold modality (``{"text": n, "image": m}``)."""
        counts = dict.fromkeys(MODALITIES, 0)
        for query in self.queries:
            counts[query.gold_modality] = counts.get(query.gold_modality, 0) + 1
        return counts

    def summary(self) -> str:
        """Human readable counts: queries per modality, corpus size, skipped items per reason."""
        counts = self.modality_counts()
        head = (
            f"{self.name} {self.split} ({self.pool} pool): {len(self.queries)} queries "
            f"({counts['text']} text, {counts['image']} image); corpus {len(self.texts)} passages "
            f"+ {len(self.images)} images"
        )
        lines = [head]
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
    """Validate the ``pool`` argument."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    return pool


def find_jsonl(root: Path, stem: str) -> Path | None:
    """``root/stem.jsonl.gz`` or ``root/stem.jsonl``, whichever exists (gzip first)."""
    for candidate in (root / f"{stem}.jsonl.gz", root / f"{stem}.jsonl"):
        if candidate.is_file():
            return candidate
    return None


def iter_jsonl(path: Path, skipped: collections.Counter) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each JSON-object line of a (gzipped) jsonl file.

    Blank lines are ignored; lines that are not a JSON object are counted in ``skipped`` under
    ``"malformed JSON line (<file name>)"`` and loading goes on.
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
    """``record[key]``, or ValueError naming the missing field and where the record came from."""
    try:
        return record[key]
    except KeyError:
        raise ValueError(f"{where}: missing field {key!r}") from None
    except TypeError:
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}") from None


def passage_text(title: str, text: str) -> str:
    """The text indexed for a passage: ``title + ". " + text`` (just ``text`` if no title)."""
    title = (title or "").strip()
    text = (text or "").strip()
    return f"{title}. {text}" if title else text


def unique(ids) -> tuple[str, ...]:
    """Order-preserving de-duplication."""
    return tuple(dict.fromkeys(ids))


def check_both_modalities(dataset: BenchmarkDataset) -> None:
    """ValueError when the loaded split has no query of one of the two modalities."""
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
    """A parsed question before its gold ids are checked against the corpus."""

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
    """Keep the questions whose gold items are all in the corpus, build their pools, check both modalities."""
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

