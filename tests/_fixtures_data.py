"""Fixtures that build small stand-in benchmark datasets on disk (MMQA and WebQA).

MMQA stand-ins use REAL question and image-metadata records from the shared MMQA dev file
(``../shared/data/mmqa`` next to the repository, or ``$MMGAP_SHARED_DATA``); passages and pixels are
not available offline, so passages are generated and images are tiny PIL images. Tests that need
the shared files are skipped with a clear reason when they are absent.

MixBench stand-ins follow the documented layout (``ROOT/SUBSET/{query,corpus,qrel,mixed_corpus}``
as ``.jsonl`` or ``.parquet``, ``ROOT/SUBSET/images/``) with every hub field on every record.

Public fixtures: ``mmqa_standin`` / ``mmqa_root``, ``mmqa_full_dev_root``, ``webqa_standin`` /
``webqa_root``, ``mixbench_root``. Helpers ``write_jsonl_gz``, ``write_webqa``,
``mixbench_records``, ``write_mixbench`` and ``tiny_image_bytes`` build variants; ``run_main`` and
``result_value`` run ``mmgap reproduce`` in-process and read its report.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "MIXBENCH_SUBSET",
    "SHARED_DATA_ENV",
    "MMQAStandIn",
    "WebQAStandIn",
    "mixbench_records",
    "mixbench_root",
    "mmqa_full_dev_root",
    "mmqa_real_records",
    "mmqa_root",
    "mmqa_standin",
    "result_value",
    "run_main",
    "shared_mmqa_dir",
    "tiny_image_bytes",
    "webqa_record",
    "webqa_root",
    "webqa_standin",
    "write_jsonl_gz",
    "write_mixbench",
    "write_webqa",
]

SHARED_DATA_ENV = "MMGAP_SHARED_DATA"
_SINGLE_TYPES = {"TextQ": "text", "ImageQ": "image", "ImageListQ": "image"}
_PIL_FORMATS = {
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "tif": "TIFF",
    "tiff": "TIFF",
}


def shared_mmqa_dir() -> Path | None:
    """Folder holding the real ``MMQA_dev.jsonl.gz`` and ``MMQA_images.jsonl.gz``, or None."""
    candidates = []
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        candidates += [Path(env) / "mmqa", Path(env)]
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mmqa")
    for folder in candidates:
        if (folder / "MMQA_dev.jsonl.gz").is_file() and (folder / "MMQA_images.jsonl.gz").is_file():
            return folder
    return None


def _require_shared_mmqa() -> Path:
    folder = shared_mmqa_dir()
    if folder is None:
        pytest.skip(
            "real MMQA files not found: expected MMQA_dev.jsonl.gz and MMQA_images.jsonl.gz in "
            f"../shared/data/mmqa next to the repository or in ${SHARED_DATA_ENV}[/mmqa]"
        )
    return folder


def _read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl_gz(path: Path, records, extra_lines=()) -> Path:
    """Write records as gzipped JSON lines, then any raw ``extra_lines`` (e.g. malformed ones)."""
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
        for line in extra_lines:
            fh.write(line + "\n")
    return path


def _colour(key: str) -> tuple[int, int, int]:
    digest = hashlib.md5(key.encode()).digest()
    return digest[0], digest[1], digest[2]


def tiny_image_bytes(key: str, fmt: str = "PNG", size: int = 16) -> bytes:
    """A ``size``x``size`` solid-colour image (colour derived from ``key``) encoded as ``fmt``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), _colour(key)).save(buf, format=fmt)
    return buf.getvalue()


def _gold(record: dict) -> list[str]:
    return [s["doc_id"] for s in record["supporting_context"]]


def _parts(record: dict) -> set[str]:
    return {s["doc_part"] for s in record["supporting_context"]}


@dataclass
class MMQAStandIn:
    """A stand-in MMQA root plus what the loader is expected to make of it."""

    root: Path
    text_qids: list[str]  # single-modality text questions written (incl. the broken ones)
    image_qids: list[str]
    other_types: dict[str, str] = field(default_factory=dict)  # qid -> metadata.type (skipped)
    empty_text_id: str = ""
    missing_text_id: str = ""
    missing_image_id: str = ""
    broken_qids: set[str] = field(default_factory=set)  # questions whose gold is unusable
    gold_outside_metadata_qid: str | None = None  # ImageListQ citing an image not in its pool
    malformed_dev_lines: int = 2
    malformed_text_lines: int = 1
    records: dict[str, dict] = field(default_factory=dict)  # qid -> real dev record
    image_records: dict[str, dict] = field(default_factory=dict)  # id -> real image metadata


@pytest.fixture(scope="session")
def mmqa_real_records():
    folder = _require_shared_mmqa()
    dev = _read_jsonl_gz(folder / "MMQA_dev.jsonl.gz")
    images = {r["id"]: r for r in _read_jsonl_gz(folder / "MMQA_images.jsonl.gz")}
    return folder, dev, images


def _pick_unique_gold(records: list[dict], used: set[str], taken: set[str]) -> dict:
    """A single-gold question whose gold id no other written question uses as gold."""
    for record in records:
        (gold,) = _gold(record) if len(_gold(record)) == 1 else (None,)
        if gold is not None and gold not in used and record["qid"] not in taken:
            return record
    raise AssertionError("no suitable question in the real dev file")


@pytest.fixture(scope="session")
def mmqa_standin(mmqa_real_records, tmp_path_factory) -> MMQAStandIn:
    """~30 real text + ~30 real image MMQA dev questions, a few skipped types, on-disk stand-ins.

    Passages are generated (gold passages restate the question and its answer); one cited text
    gold is written empty, one is left out; one cited image gold has no file; all other cited
    images are 16x16 files in the format their real ``path`` names.
    """
    _, dev, image_meta = mmqa_real_records
    by_type: dict[str, list[dict]] = {}
    for record in dev:
        by_type.setdefault(record["metadata"]["type"], []).append(record)
    text_q = [r for r in by_type["TextQ"] if _parts(r) == {"text"}][:30]
    image_q = by_type["ImageQ"][:20] + by_type["ImageListQ"][:10]
    odd = next(
        r for r in by_type["ImageListQ"] if not set(_gold(r)) <= set(r["metadata"]["image_doc_ids"])
    )
    if odd not in image_q:
        image_q.append(odd)
    others = (
        by_type["TableQ"][:3]
        + by_type["Compose(TextQ,TableQ)"][:2]
        + by_type["Compose(ImageQ,TextQ)"][:2]
    )
    chosen = {r["qid"] for r in text_q + image_q + others}
    written = [r for r in dev if r["qid"] in chosen]  # keep the file's order

    gold_count: dict[str, int] = {}
    for record in text_q + image_q:
        for g in _gold(record):
            gold_count[g] = gold_count.get(g, 0) + 1
    shared = {g for g, n in gold_count.items() if n > 1}
    empty_q = _pick_unique_gold(text_q, shared, set())
    missing_text_q = _pick_unique_gold(text_q, shared, {empty_q["qid"]})
    missing_image_q = _pick_unique_gold(by_type["ImageQ"][:20], shared, set())

    root = tmp_path_factory.mktemp("mmqa")
    write_jsonl_gz(
        root / "MMQA_dev.jsonl.gz", written, extra_lines=["{this is not json", "[1, 2, 3]"]
    )

    text_ids: dict[str, None] = {}
    image_ids: dict[str, None] = {}
    gold_text: dict[str, dict] = {}
    for record in written:
        meta = record["metadata"]
        text_ids.update(dict.fromkeys(meta["text_doc_ids"]))
        image_ids.update(dict.fromkeys(meta["image_doc_ids"]))
        for s in record["supporting_context"]:
            if s["doc_part"] == "text":
                text_ids[s["doc_id"]] = None
                gold_text.setdefault(s["doc_id"], record)
            elif s["doc_part"] == "image":
                image_ids[s["doc_id"]] = None

    empty_id, missing_text_id = _gold(empty_q)[0], _gold(missing_text_q)[0]
    passages = []
    for n, pid in enumerate(text_ids):
        if pid == missing_text_id:
            continue
        if pid == empty_id:
            body = ""
        elif pid in gold_text:
            q = gold_text[pid]
            body = f"{q['question']} The answer is {q['answers'][0]['answer']}."
        else:
            body = f"Background passage number {n}, unrelated to any question."
        passages.append(
            {
                "id": pid,
                "title": f"Article {pid[:6]}",
                "text": body,
                "url": f"https://example.org/{pid}",
            }
        )
    write_jsonl_gz(root / "MMQA_texts.jsonl.gz", passages, extra_lines=['{"id": "broken'])

    missing_image_id = _gold(missing_image_q)[0]
    image_records = [image_meta[i] for i in image_ids]
    write_jsonl_gz(root / "MMQA_images.jsonl.gz", image_records)
    image_dir = root / "final_dataset_images"
    image_dir.mkdir()
    for record in image_records:
        if record["id"] == missing_image_id:
            continue
        ext = record["path"].rsplit(".", 1)[-1].lower()
        fmt = _PIL_FORMATS.get(ext, "PNG")
        (image_dir / record["path"]).write_bytes(tiny_image_bytes(record["id"], fmt))

    return MMQAStandIn(
        root=root,
        text_qids=[r["qid"] for r in text_q],
        image_qids=[r["qid"] for r in image_q],
        other_types={r["qid"]: r["metadata"]["type"] for r in others},
        empty_text_id=empty_id,
        missing_text_id=missing_text_id,
        missing_image_id=missing_image_id,
        broken_qids={empty_q["qid"], missing_text_q["qid"], missing_image_q["qid"]},
        gold_outside_metadata_qid=odd["qid"],
        records={r["qid"]: r for r in written},
        image_records={r["id"]: r for r in image_records},
    )


@pytest.fixture(scope="session")
def mmqa_root(mmqa_standin) -> Path:
    """Path of the MMQA stand-in folder (see ``mmqa_standin``)."""
    return mmqa_standin.root


@pytest.fixture(scope="session")
def mmqa_full_dev_root(mmqa_real_records, tmp_path_factory) -> Path:
    """The full real dev file and image metadata, with a generated passage for every cited text
    id and an EMPTY placeholder file for every gold image of a single-modality question (the
    loader only checks that files exist; these placeholders cannot be decoded). Other cited
    images have no file, so they are counted as missing."""
    folder, dev, image_meta = mmqa_real_records
    root = tmp_path_factory.mktemp("mmqa_full")
    for name in ("MMQA_dev.jsonl.gz", "MMQA_images.jsonl.gz"):
        (root / name).symlink_to(folder / name)
    text_ids: dict[str, None] = {}
    gold_images: set[str] = set()
    for record in dev:
        text_ids.update(dict.fromkeys(record["metadata"]["text_doc_ids"]))
        for s in record["supporting_context"]:
            if s["doc_part"] == "text":
                text_ids[s["doc_id"]] = None
            elif s["doc_part"] == "image" and record["metadata"]["type"] in _SINGLE_TYPES:
                gold_images.add(s["doc_id"])
    write_jsonl_gz(
        root / "MMQA_texts.jsonl.gz",
        ({"id": t, "title": "T", "text": f"passage {t}", "url": ""} for t in text_ids),
    )
    image_dir = root / "images"  # the alternative folder name the loader accepts
    image_dir.mkdir()
    for image_id in gold_images:
        (image_dir / image_meta[image_id]["path"]).touch()
    return root


# ------------------------------------------------------------------------------------- WebQA


def _txt_fact(sid: str, fact: str, title: str = "") -> dict:
    return {
        "title": title or f"Page {sid}",
        "fact": fact,
        "url": f"https://example.org/{sid}",
        "snippet_id": sid,
    }


def _img_fact(image_id: int, title: str = "") -> dict:
    return {
        "image_id": image_id,
        "title": title or f"Picture {image_id}",
        "caption": f"caption of {image_id}",
        "url": f"https://example.org/p/{image_id}",
        "imgUrl": f"https://example.org/i/{image_id}.png",
    }


def webqa_record(
    guid,
    split,
    question,
    answer='"yes"',
    *,
    txt_pos=(),
    txt_neg=(),
    img_pos=(),
    img_neg=(),
    qcate="text",
) -> dict:
    """A WebQA_train_val.json record in the release's field layout (question under ``Q``)."""
    return {
        "Q": f'"{question}"',
        "A": [answer],
        "topic": "test",
        "split": split,
        "Qcate": qcate,
        "Guid": guid,
        "txt_posFacts": list(txt_pos),
        "txt_negFacts": list(txt_neg),
        "img_posFacts": list(img_pos),
        "img_negFacts": list(img_neg),
    }


def write_webqa(root: Path, records: dict[str, dict], image_ids: list[int]) -> Path:
    """Write ``WebQA_train_val.json`` plus ``imgs.tsv``/``imgs.lineidx`` holding ``image_ids`` in
    that line order (each a real base64 PNG)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "WebQA_train_val.json").write_text(json.dumps(records), encoding="utf-8")
    offsets = []
    with (root / "imgs.tsv").open("wb") as tsv:
        for image_id in image_ids:
            offsets.append(tsv.tell())
            payload = base64.b64encode(tiny_image_bytes(str(image_id)))
            tsv.write(str(image_id).encode() + b"\t" + payload + b"\n")
    (root / "imgs.lineidx").write_text("".join(f"{o}\n" for o in offsets), encoding="ascii")
    return root


@dataclass
class WebQAStandIn:
    root: Path
    records: dict[str, dict]
    image_ids: list[int]  # tsv line order


@pytest.fixture(scope="session")
def webqa_standin(tmp_path_factory) -> WebQAStandIn:
    """Eight val and two train WebQA questions covering both modalities and every skip reason.

    ``imgs.tsv`` lines 0-7 hold ids 30000000-30000007 (the release's ``id % 1e7 == line`` rule);
    line 8 holds 31234567 (rule points past the end) and line 9 holds 20000003 (rule points at the
    line of 30000003), so both need the loader's fallback scan. 30000099 is not stored at all.
    """
    f = _txt_fact
    records = {
        "v_txt1": webqa_record(
            "v_txt1",
            "val",
            "Who designed the Blue Bridge?",
            txt_pos=[f("s1", "The Blue Bridge was designed by Ann Lee.")],
            txt_neg=[f("s2", "The Red Bridge is in Oslo."), f("s3", "Bridges span rivers.")],
            img_neg=[_img_fact(30000001), _img_fact(30000002)],
        ),
        "v_txt2": webqa_record(
            "v_txt2",
            "val",
            "When did the museum open and close?",
            txt_pos=[f("s4", "The museum opened in 1901."), f("s5", "The museum closed in 1999.")],
            txt_neg=[f("s1", "The Blue Bridge was designed by Ann Lee.")],
            img_neg=[_img_fact(30000003)],
        ),
        "v_img1": webqa_record(
            "v_img1",
            "val",
            "What colour is the tower's roof?",
            img_pos=[_img_fact(30000001, "Tower")],
            img_neg=[_img_fact(30000004), _img_fact(20000003)],
            txt_neg=[f("s6", "The tower is 40 m tall.")],
            qcate="color",
        ),
        "v_img2": webqa_record(
            "v_img2",
            "val",
            "How many arches does the gate have?",
            img_pos=[_img_fact(31234567, "Gate")],
            img_neg=[_img_fact(30000002)],
            txt_neg=[f("s2", "The Red Bridge is in Oslo.")],
            qcate="number",
        ),
        "v_both": webqa_record(
            "v_both",
            "val",
            "Is the statue taller than the tower?",
            txt_pos=[f("s7", "The statue is 30 m tall.")],
            img_pos=[_img_fact(30000005)],
            qcate="YesNo",
        ),
        "v_neither": webqa_record(
            "v_neither", "val", "What is north of the lake?", txt_neg=[f("s8", "The lake is deep.")]
        ),
        "v_missing_img": webqa_record(
            "v_missing_img",
            "val",
            "What shape is the fountain?",
            img_pos=[_img_fact(30000099)],
            img_neg=[_img_fact(30000004)],
            qcate="shape",
        ),
        "v_empty_fact": webqa_record(
            "v_empty_fact",
            "val",
            "Who founded the club?",
            txt_pos=[f("s9", "   ")],
            txt_neg=[f("s3", "Bridges span rivers.")],
        ),
        "t_txt": webqa_record(
            "t_txt",
            "train",
            "Where is the castle?",
            txt_pos=[f("s10", "The castle is in Graz.")],
            img_neg=[_img_fact(30000006)],
        ),
        "t_img": webqa_record(
            "t_img",
            "train",
            "What animal is on the flag?",
            img_pos=[_img_fact(30000007, "Flag")],
            txt_neg=[f("s11", "Flags fly high.")],
            qcate="Others",
        ),
    }
    image_ids = [30000000 + i for i in range(8)] + [31234567, 20000003]
    root = write_webqa(tmp_path_factory.mktemp("webqa"), records, image_ids)
    return WebQAStandIn(root=root, records=records, image_ids=image_ids)


@pytest.fixture(scope="session")
def webqa_root(webqa_standin) -> Path:
    """Path of the WebQA stand-in folder (see ``webqa_standin``)."""
    return webqa_standin.root


# ---------------------------------------------------------------------------------- MixBench

MIXBENCH_SUBSET = "MSCOCO"
_HUB_FIELDS = ("query_id", "corpus_id", "text", "image", "score")


def _hub(**fields) -> dict:
    """A record with all five hub fields (the ones a split does not use are None)."""
    return {**dict.fromkeys(_HUB_FIELDS), **fields}


def mixbench_records(n: int = 12, *, mixed: bool = False) -> dict[str, list[dict]]:
    """MixBench-shaped records: ``n`` queries, each relevant to one corpus item (score 1).

    Corpus item ``c{i}`` has the text ``thing number {i} ...`` and the image ``img/{i:03d}.png``;
    query ``q{i}`` is ``a photo of thing number {i}``. With ``mixed``, a ``mixed_corpus`` split
    gives item ``i`` only its text (``i % 3 == 0``), only its image (1) or both (2).
    """
    out = {
        "query": [_hub(query_id=f"q{i}", text=f"a photo of thing number {i}") for i in range(n)],
        "corpus": [
            _hub(corpus_id=f"c{i}", text=f"thing number {i} on a table", image=f"img/{i:03d}.png")
            for i in range(n)
        ],
        "qrel": [_hub(query_id=f"q{i}", corpus_id=f"c{i}", score=1) for i in range(n)],
    }
    if mixed:
        out["mixed_corpus"] = [
            dict(
                r, text=None if i % 3 == 1 else r["text"], image=None if i % 3 == 0 else r["image"]
            )
            for i, r in enumerate(out["corpus"])
        ]
    return out


def write_mixbench(
    root: Path,
    records: dict[str, list[dict]],
    *,
    subset: str = MIXBENCH_SUBSET,
    fmt: str = "jsonl",
    extra_lines: dict[str, list[str]] | None = None,
    skip_images: tuple[str, ...] = (),
) -> Path:
    """Write a MixBench subset in the documented layout; return ``root``.

    Each split in ``records`` becomes ``root/SUBSET/SPLIT.jsonl`` (then ``extra_lines[SPLIT]``
    raw) or, with ``fmt="parquet"``, ``SPLIT.parquet``. Every safe relative ``image`` of
    ``corpus`` / ``mixed_corpus`` gets a tiny PNG under ``images/``, except ``skip_images``.
    """
    folder = root / subset
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for split, rows in records.items():
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}.parquet")
            continue
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
            for line in (extra_lines or {}).get(split, ()):
                fh.write(line + "\n")
    names = {
        r["image"]
        for split in ("corpus", "mixed_corpus")
        for r in records.get(split, ())
        if isinstance(r.get("image"), str)
    }
    for name in sorted(names - set(skip_images)):
        if name.startswith(("/", "..")) or "\x00" in name:
            continue
        path = folder / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tiny_image_bytes(name))
    return root


@pytest.fixture(scope="session")
def mixbench_root(tmp_path_factory) -> Path:
    """A 12-item MixBench MSCOCO stand-in (jsonl, no ``mixed_corpus``): root of ``MSCOCO/``."""
    return write_mixbench(tmp_path_factory.mktemp("mixbench"), mixbench_records())


def run_main(capsys, argv) -> tuple[int, str, str]:
    """``mmgap_core.cli.main(argv)`` in-process: (exit code, stdout, stderr)."""
    from mmgap_core.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def result_value(model: dict, method: str, subset: str, metric: str):
    """The one value of a reproduce report's model for (method, subset, metric)."""
    rows = [
        r
        for r in model["results"]
        if (r["method"], r["subset"], r["metric"]) == (method, subset, metric)
    ]
    assert len(rows) == 1, (method, subset, metric)
    return rows[0]["value"]
