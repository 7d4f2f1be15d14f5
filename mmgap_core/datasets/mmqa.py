"""MultiModalQA (MMQA, Talmor et al. 2021; github.com/allenai/multimodalqa) as a benchmark.

Files read from ``root`` (each ``.jsonl.gz`` or plain ``.jsonl``):

``MMQA_{split}.jsonl.gz`` -- one question per line::

    {"qid": str, "question": str,
     "answers": [...],                                   # not used here
     "metadata": {"type": "TextQ" | "ImageQ" | "ImageListQ" | "TableQ" | "Compose(...)" | ...,
                  "text_doc_ids": [str, ...], "image_doc_ids": [str, ...], ...},
     "supporting_context": [{"doc_id": str, "doc_part": "text" | "image" | "table"}, ...]}

``MMQA_texts.jsonl.gz`` -- passages ``{"id", "title", "text", "url"}``.

``MMQA_images.jsonl.gz`` -- image metadata ``{"id", "title", "url", "path"}``; ``path`` names the
file under ``root/final_dataset_images/`` (the folder in ``final_dataset_images.zip``) or
``root/images/``. A ``path`` must stay inside that folder: one that climbs out (``../x.png``), is
absolute, or passes through a symlink leading out of the folder is skipped and counted as
"image path outside the image folder" (the folder itself may be a symlink: the user laid it out).

Only single-modality questions are kept: ``metadata.type`` ``TextQ`` whose supporting context is
text only (gold modality "text") and ``ImageQ`` / ``ImageListQ`` whose supporting context is image
only (gold modality "image"). Gold ids are the ``supporting_context`` doc ids. Questions needing a
table or several modalities are skipped and counted by reason.

Context pool: ``metadata.text_doc_ids + metadata.image_doc_ids`` plus the gold ids (one dev
ImageListQ cites a gold image that its ``image_doc_ids`` lacks), filtered to the corpus.
Global pool: every passage and image, ``pool_ids=None``.

Bad input is counted in ``BenchmarkDataset.skipped`` and loading goes on: malformed JSON lines,
empty passages, image files that do not exist or lie outside the image folder, questions whose
gold id is not in the corpus. In the
context setting only passages / images that some kept-type question cites are read and checked.
A record missing a required field raises ``ValueError`` naming the file, line and field; a missing
file or image folder raises ``FileNotFoundError``.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path

from .base import (
    BenchmarkDataset,
    ImageRef,
    QuestionCandidate,
    assemble_dataset,
    check_pool,
    find_jsonl,
    iter_jsonl,
    passage_text,
    require,
    unique,
)
from .paths import UnsafePathError, confined_path, resolve_folder

logger = logging.getLogger(__name__)

TEXT_TYPES = frozenset({"TextQ"})
IMAGE_TYPES = frozenset({"ImageQ", "ImageListQ"})
IMAGE_DIRS = ("final_dataset_images", "images")

SKIP_TABLE = "question needs a table"
SKIP_MULTI = "question needs several modalities"
SKIP_MISMATCH = "supporting_context disagrees with metadata.type"
SKIP_NO_CONTEXT = "question has no supporting_context"
SKIP_EMPTY_QUESTION = "empty question text"
SKIP_DUPLICATE = "duplicate question id"
SKIP_EMPTY_PASSAGE = "empty passage"
SKIP_IMAGE_MISSING = "image file missing"


def classify_question(qtype: str, doc_parts: set[str]) -> tuple[str | None, str | None]:
    """Classify a question by its ``metadata.type`` and the doc parts of its supporting context.

    Parameters
    ----------
    qtype : str
        ``metadata.type``, e.g. ``"TextQ"`` or ``"Compose(ImageQ,TextQ)"``.
    doc_parts : set of str
        The ``doc_part`` values of ``supporting_context``.

    Returns
    -------
    tuple
        ``(gold_modality, None)`` for a usable question, else ``(None, skip_reason)``.
    """
    if not doc_parts:
        return None, SKIP_NO_CONTEXT
    if qtype in TEXT_TYPES and doc_parts == {"text"}:
        return "text", None
    if qtype in IMAGE_TYPES and doc_parts == {"image"}:
        return "image", None
    if "table" in doc_parts or "TableQ" in qtype:
        return None, SKIP_TABLE
    if qtype in TEXT_TYPES or qtype in IMAGE_TYPES:
        return None, SKIP_MISMATCH
    return None, SKIP_MULTI


def _required_file(root: Path, stem: str, what: str) -> Path:
    path = find_jsonl(root, stem)
    if path is None:
        raise FileNotFoundError(f"MMQA: {stem}.jsonl.gz ({what}) not found in {root}")
    return path


def _image_dir(root: Path) -> Path:
    for name in IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(
        f"MMQA: no image folder in {root}: expected {' or '.join(IMAGE_DIRS)}/ "
        "(unzip final_dataset_images.zip there)"
    )


def _read_questions(path: Path, skipped: collections.Counter) -> list[QuestionCandidate]:
    candidates: list[QuestionCandidate] = []
    seen: set[str] = set()
    for line, record in iter_jsonl(path, skipped):
        where = f"{path.name} line {line}"
        qid = str(require(record, "qid", where))
        where = f"{path.name} line {line} (qid {qid})"
        question = str(require(record, "question", where) or "").strip()
        metadata = require(record, "metadata", where)
        qtype = str(require(metadata, "type", f"{where} metadata"))
        support = require(record, "supporting_context", where) or []
        parts = {str(require(s, "doc_part", f"{where} supporting_context")) for s in support}
        modality, reason = classify_question(qtype, parts)
        if modality is None:
            skipped[reason] += 1
            continue
        if not question:
            skipped[SKIP_EMPTY_QUESTION] += 1
            continue
        if qid in seen:
            skipped[SKIP_DUPLICATE] += 1
            continue
        seen.add(qid)
        gold = unique(str(require(s, "doc_id", f"{where} supporting_context")) for s in support)
        text_ids = require(metadata, "text_doc_ids", f"{where} metadata") or []
        image_ids = require(metadata, "image_doc_ids", f"{where} metadata") or []
        context = unique([*map(str, text_ids), *map(str, image_ids), *gold])
        candidates.append(QuestionCandidate(qid, question, modality, gold, context))
    return candidates


def _read_texts(
    path: Path, wanted: set[str] | None, skipped: collections.Counter
) -> dict[str, str]:
    texts: dict[str, str] = {}
    for line, record in iter_jsonl(path, skipped):
        where = f"{path.name} line {line}"
        pid = str(require(record, "id", where))
        if wanted is not None and pid not in wanted:
            continue
        body = str(require(record, "text", where) or "")
        if not body.strip():
            skipped[SKIP_EMPTY_PASSAGE] += 1
            continue
        texts.setdefault(pid, passage_text(str(record.get("title") or ""), body))
    return texts


def _read_images(
    path: Path, image_dir: Path, wanted: set[str] | None, skipped: collections.Counter
) -> dict[str, ImageRef]:
    images: dict[str, ImageRef] = {}
    base = resolve_folder(image_dir)
    for line, record in iter_jsonl(path, skipped):
        where = f"{path.name} line {line}"
        iid = str(require(record, "id", where))
        if (wanted is not None and iid not in wanted) or iid in images:
            continue
        name = str(require(record, "path", where))
        try:
            confined_path(base, name)
        except UnsafePathError as exc:
            skipped[exc.reason] += 1
            logger.warning("MMQA: %s (image %r): %s; skipped", where, iid, exc)
            continue
        file = image_dir / name
        if not file.exists():  # existence only: loading never decodes pixels
            skipped[SKIP_IMAGE_MISSING] += 1
            continue
        images[iid] = ImageRef(id=iid, title=str(record.get("title") or ""), path=file)
    return images


def load_mmqa(root: str | Path, split: str = "dev", pool: str = "context") -> BenchmarkDataset:
    """Load an MMQA split as a text+image retrieval benchmark (see the module docstring).

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``MMQA_{split}.jsonl.gz``, ``MMQA_texts.jsonl.gz``,
        ``MMQA_images.jsonl.gz`` and ``final_dataset_images/`` (or ``images/``).
    split : str, default "dev"
        ``"dev"`` or ``"train"`` (any ``MMQA_{split}`` file with supporting context).
    pool : {"context", "global"}, default "context"
        Each question's own candidates, or the whole corpus.

    Returns
    -------
    BenchmarkDataset
        The kept questions and their corpus; ``skipped`` counts what was dropped, by reason.

    Raises
    ------
    FileNotFoundError
        A required file or the image folder is missing.
    ValueError
        Bad ``pool``, a record lacks a required field, or no question of one modality survives
        loading.
    """
    root = Path(root)
    check_pool(pool)
    question_file = find_jsonl(root, f"MMQA_{split}")
    if question_file is None:
        found = sorted(p.name for p in root.glob("MMQA_*.jsonl*")) if root.is_dir() else []
        raise FileNotFoundError(
            f"MMQA: MMQA_{split}.jsonl.gz not found in {root} (found: {found or 'nothing'})"
        )
    texts_file = _required_file(root, "MMQA_texts", "text passages")
    images_file = _required_file(root, "MMQA_images", "image metadata")
    image_dir = _image_dir(root)

    skipped: collections.Counter = collections.Counter()
    candidates = _read_questions(question_file, skipped)
    wanted = None
    if pool == "context":  # only read the corpus items some question can retrieve
        wanted = {doc_id for c in candidates for doc_id in c.context_ids}
    texts = _read_texts(texts_file, wanted, skipped)
    images = _read_images(images_file, image_dir, wanted, skipped)

    return assemble_dataset(
        "mmqa",
        split,
        pool,
        candidates,
        texts,
        images,
        skipped,
        [question_file, texts_file, images_file],
    )
