"""WebQA (Chang et al. 2022; github.com/WebQnA/WebQA, ``WebQA_data_first_release``) as a benchmark.

Files read from ``root``:

``WebQA_train_val.json`` -- one JSON object, guid -> record (the question is under ``"Q"`` in the
release; ``"Question"`` is accepted as well)::

    {"Q": str,                      # wrapped in literal double quotes, which are stripped
     "A": [str, ...], "topic": str, "Qcate": "text" | "YesNo" | "choose" | ..., "Guid": str,
     "split": "train" | "val",
     "txt_posFacts": [{"title": str, "fact": str, "url": str, "snippet_id": str}, ...],
     "txt_negFacts": [... same ...],
     "img_posFacts": [{"image_id": int, "title": str, "caption": str, "url": str,
                       "imgUrl": str}, ...],
     "img_negFacts": [... same ...]}

``imgs.tsv`` -- one line per image: ``image_id<TAB>base64-encoded image``.
``imgs.lineidx`` -- one ASCII byte offset per line of ``imgs.tsv``. The WebQA release places image
``image_id`` at line ``image_id % 10_000_000``; the loader checks the id stored on that line and
falls back to scanning every line's id when the rule does not hold.

Gold modality: "image" when a question has ``img_posFacts`` and no ``txt_posFacts``, "text" when it
has ``txt_posFacts`` and no ``img_posFacts``; questions with both or neither are skipped and
counted. Text corpus ids are ``snippet_id`` with text ``title + ". " + fact``; image ids are
``str(image_id)``. Context pool: the question's positive + negative facts of both modalities.
Global pool: union of all facts of the loaded split, ``pool_ids=None``.

Paths: records name no files. An image is found by its id in ``imgs.tsv`` (an id is never joined
to a path), so an id such as ``../../x.png`` or ``/etc/passwd`` is simply not in the store and is
counted as "image not in imgs.tsv"; nothing outside ``root`` is read. The three files above are read
at their fixed names in ``root`` (they may be symlinks the user placed there).

Counted in ``skipped`` (loading goes on): empty facts, images absent from ``imgs.tsv``, questions
whose gold id is not in the corpus. A record missing a field raises ``ValueError`` naming the guid
and the field; missing files raise ``FileNotFoundError``. Loading never decodes images.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from .base import (
    BenchmarkDataset,
    ImageRef,
    QuestionCandidate,
    assemble_dataset,
    check_pool,
    passage_text,
    require,
    unique,
)

QUESTIONS_FILE = "WebQA_train_val.json"
IMAGES_TSV = "imgs.tsv"
IMAGES_LINEIDX = "imgs.lineidx"
QUESTION_KEYS = ("Q", "Question")
LINE_RULE_MODULUS = 10_000_000  # WebQA image ids are 3xxxxxxx; id % 1e7 is the tsv line

SKIP_BOTH = "question has both text and image gold facts"
SKIP_NEITHER = "question has no gold facts"
SKIP_EMPTY_QUESTION = "empty question text"
SKIP_EMPTY_PASSAGE = "empty passage"
SKIP_IMAGE_MISSING = "image not in imgs.tsv"


def _strip_quotes(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text


def _question_field(record: dict, where: str):
    for key in QUESTION_KEYS:
        if key in record:
            return record[key]
    raise ValueError(f"{where}: missing field {QUESTION_KEYS[0]!r} (the question text)")


def _fact_list(record: dict, key: str, where: str) -> list:
    facts = require(record, key, where)
    if facts is None:
        return []
    if not isinstance(facts, list):
        raise ValueError(f"{where}: field {key!r} must be a list, got {type(facts).__name__}")
    return facts


class _TsvIndex:
    """Finds the byte offset of an image's line in ``imgs.tsv`` without decoding anything."""

    def __init__(self, tsv: Path, lineidx: Path):
        self.tsv = tsv
        self.offsets: list[int] = []
        with lineidx.open("r", encoding="ascii") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    self.offsets.append(int(line))
                except ValueError:
                    raise ValueError(
                        f"{lineidx} line {number}: expected a byte offset, got {line.strip()!r}"
                    ) from None
        self._scanned: dict[str, int] | None = None

    @staticmethod
    def _id_at(fh, offset: int) -> str | None:
        fh.seek(offset)
        head = fh.read(64)
        image_id, sep, _ = head.partition(b"\t")
        return image_id.decode("ascii", "replace").strip() if sep else None

    def locate(self, image_ids) -> dict[str, int]:
        """Map each id present in the store to the byte offset of its line."""
        found: dict[str, int] = {}
        unresolved = []
        with self.tsv.open("rb") as fh:
            for image_id in image_ids:
                numeric = image_id.isascii() and image_id.isdigit()  # not "²": int() refuses it
                line = int(image_id) % LINE_RULE_MODULUS if numeric else -1
                if 0 <= line < len(self.offsets):
                    offset = self.offsets[line]
                    if self._id_at(fh, offset) == image_id:
                        found[image_id] = offset
                        continue
                unresolved.append(image_id)
            if unresolved:
                if self._scanned is None:  # the id->line rule failed: read every line's id once
                    self._scanned = {}
                    for offset in self.offsets:
                        stored = self._id_at(fh, offset)
                        if stored is not None:
                            self._scanned.setdefault(stored, offset)
                for image_id in unresolved:
                    if image_id in self._scanned:
                        found[image_id] = self._scanned[image_id]
        return found


def _load_json(path: Path) -> dict:
    try:
        with path.open("r", encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a JSON object guid -> record, got {type(data).__name__}"
        )
    return data


def load_webqa(root: str | Path, split: str = "val", pool: str = "context") -> BenchmarkDataset:
    """Load a WebQA split as a text+image retrieval benchmark (see the module docstring).

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``WebQA_train_val.json``, ``imgs.tsv`` and ``imgs.lineidx``.
    split : {"val", "train"}, default "val"
        The records whose ``split`` field has this value.
    pool : {"context", "global"}, default "context"
        Each question's own facts, or the union of all facts of the split.

    Returns
    -------
    BenchmarkDataset
        The kept questions and their corpus; ``skipped`` counts what was dropped, by reason.

    Raises
    ------
    FileNotFoundError
        ``WebQA_train_val.json``, ``imgs.tsv`` or ``imgs.lineidx`` is missing.
    ValueError
        Bad ``pool``, invalid JSON, a record lacks a field, the split has no questions, or no
        question of one modality survives loading.
    """
    root = Path(root)
    check_pool(pool)
    json_file, tsv, lineidx = root / QUESTIONS_FILE, root / IMAGES_TSV, root / IMAGES_LINEIDX
    for path in (json_file, tsv, lineidx):
        if not path.is_file():
            raise FileNotFoundError(f"WebQA: {path.name} not found in {root}")
    data = _load_json(json_file)

    skipped: collections.Counter = collections.Counter()
    passages: dict[str, str] = {}  # snippet id -> text ("" when empty)
    image_titles: dict[str, str] = {}
    candidates: list[QuestionCandidate] = []
    splits_seen: collections.Counter = collections.Counter()
    for guid, record in data.items():
        where = f"{QUESTIONS_FILE} record {guid!r}"
        record_split = str(require(record, "split", where))
        splits_seen[record_split] += 1
        if record_split != split:
            continue
        ids: dict[str, list[str]] = {}
        for key in ("txt_posFacts", "txt_negFacts"):
            ids[key] = []
            for fact in _fact_list(record, key, where):
                sid = str(require(fact, "snippet_id", f"{where} {key}"))
                body = str(require(fact, "fact", f"{where} {key}") or "")
                text = passage_text(str(fact.get("title") or ""), body) if body.strip() else ""
                if not passages.get(sid):
                    passages[sid] = text
                ids[key].append(sid)
        for key in ("img_posFacts", "img_negFacts"):
            ids[key] = []
            for fact in _fact_list(record, key, where):
                iid = str(require(fact, "image_id", f"{where} {key}")).strip()
                image_titles.setdefault(iid, str(fact.get("title") or ""))
                ids[key].append(iid)
        question = _strip_quotes(str(_question_field(record, where) or ""))
        has_text, has_image = bool(ids["txt_posFacts"]), bool(ids["img_posFacts"])
        if has_text and has_image:
            skipped[SKIP_BOTH] += 1
            continue
        if not (has_text or has_image):
            skipped[SKIP_NEITHER] += 1
            continue
        if not question:
            skipped[SKIP_EMPTY_QUESTION] += 1
            continue
        modality = "text" if has_text else "image"
        gold = unique(ids["txt_posFacts"] if has_text else ids["img_posFacts"])
        context = unique(
            [*ids["txt_posFacts"], *ids["txt_negFacts"], *ids["img_posFacts"], *ids["img_negFacts"]]
        )
        candidates.append(QuestionCandidate(str(guid), question, modality, gold, context))

    if not splits_seen.get(split):
        raise ValueError(
            f"WebQA: no questions with split {split!r} in {json_file} "
            f"(found splits: {dict(splits_seen) or 'none'})"
        )

    if pool == "context":  # only resolve what some usable question can retrieve
        wanted = {i for c in candidates for i in c.context_ids}
        passages = {k: v for k, v in passages.items() if k in wanted}
        image_titles = {k: v for k, v in image_titles.items() if k in wanted}
    texts: dict[str, str] = {}
    for sid, text in passages.items():
        if text:
            texts[sid] = text
        else:
            skipped[SKIP_EMPTY_PASSAGE] += 1
    offsets = _TsvIndex(tsv, lineidx).locate(sorted(image_titles))
    images: dict[str, ImageRef] = {}
    for iid, title in image_titles.items():
        if iid in offsets:
            images[iid] = ImageRef(id=iid, title=title, tsv=tsv, offset=offsets[iid])
        else:
            skipped[SKIP_IMAGE_MISSING] += 1

    return assemble_dataset(
        "webqa", split, pool, candidates, texts, images, skipped, [json_file, tsv, lineidx]
    )
