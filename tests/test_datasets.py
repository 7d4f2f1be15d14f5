"""Benchmark loaders (MMQA on real dev records with stand-in passages/images, WebQA stand-in)."""

from __future__ import annotations

import base64
import gzip
import io
import shutil
from pathlib import Path

import pytest
from _fixtures_data import (
    _colour,
    _img_fact,
    _txt_fact,
    tiny_image_bytes,
    webqa_record,
    write_jsonl_gz,
    write_webqa,
)
from PIL import Image

from mmgap_core.captioning import Captioner, MetadataCaptioner, caption_corpus, open_image
from mmgap_core.datasets import (
    BenchmarkDataset,
    BenchmarkQuery,
    ImageRef,
    detect_dataset,
    load_dataset,
    load_mmqa,
    load_webqa,
)
from mmgap_core.datasets.mmqa import classify_question

# ------------------------------------------------------------------------------------ MMQA


@pytest.fixture(scope="module")
def mmqa_context(mmqa_root) -> BenchmarkDataset:
    return load_mmqa(mmqa_root, split="dev", pool="context")


@pytest.fixture(scope="module")
def mmqa_global(mmqa_root) -> BenchmarkDataset:
    return load_mmqa(mmqa_root, split="dev", pool="global")


def _copy_root(src: Path, dst: Path) -> Path:
    """Copy a stand-in root, symlinking the (large) image folder."""
    dst.mkdir()
    for item in src.iterdir():
        if item.is_dir():
            (dst / item.name).symlink_to(item)
        else:
            shutil.copy(item, dst / item.name)
    return dst


def test_mmqa_keeps_single_modality_questions_with_real_fields(mmqa_context, mmqa_standin):
    s = mmqa_standin
    by_id = {q.id: q for q in mmqa_context.queries}
    expected_text = set(s.text_qids) - s.broken_qids
    expected_image = set(s.image_qids) - s.broken_qids
    assert {q.id for q in mmqa_context.queries if q.gold_modality == "text"} == expected_text
    assert {q.id for q in mmqa_context.queries if q.gold_modality == "image"} == expected_image
    for qid, query in by_id.items():
        record = s.records[qid]
        assert isinstance(query, BenchmarkQuery)
        assert query.text == record["question"].strip()
        part = query.gold_modality
        gold = tuple(c["doc_id"] for c in record["supporting_context"] if c["doc_part"] == part)
        assert query.gold_ids == gold
        corpus = mmqa_context.texts if part == "text" else mmqa_context.images
        assert all(g in corpus for g in query.gold_ids)
    # metadata.type decides the modality: ImageListQ questions are image questions too
    image_list = [q for q in by_id if s.records[q]["metadata"]["type"] == "ImageListQ"]
    assert image_list and all(by_id[q].gold_modality == "image" for q in image_list)
    assert any(len(by_id[q].gold_ids) > 1 for q in image_list)


def test_mmqa_context_pool_is_metadata_docs_plus_gold(mmqa_context, mmqa_standin):
    for query in mmqa_context.queries:
        meta = mmqa_standin.records[query.id]["metadata"]
        cited = set(meta["text_doc_ids"]) | set(meta["image_doc_ids"]) | set(query.gold_ids)
        assert query.pool_ids is not None
        assert set(query.gold_ids) <= set(query.pool_ids)
        assert set(query.pool_ids) <= cited
        # everything cited and usable is in the pool; unusable items are filtered out
        usable = {i for i in cited if i in mmqa_context.texts or i in mmqa_context.images}
        assert set(query.pool_ids) == usable
        assert len(set(query.pool_ids)) == len(query.pool_ids)
        assert any(i in mmqa_context.texts for i in query.pool_ids)
        assert any(i in mmqa_context.images for i in query.pool_ids)
        assert mmqa_standin.missing_text_id not in query.pool_ids
        assert mmqa_standin.empty_text_id not in query.pool_ids
        assert mmqa_standin.missing_image_id not in query.pool_ids
    odd = mmqa_standin.gold_outside_metadata_qid
    query = next(q for q in mmqa_context.queries if q.id == odd)
    assert not set(query.gold_ids) <= set(mmqa_standin.records[odd]["metadata"]["image_doc_ids"])
    # the context corpus is exactly what the pools reference
    used = {i for q in mmqa_context.queries for i in q.pool_ids}
    assert used == set(mmqa_context.texts) | set(mmqa_context.images)


def test_mmqa_global_pool_is_whole_corpus(mmqa_global, mmqa_context, mmqa_standin):
    assert mmqa_global.pool == "global"
    assert all(q.pool_ids is None for q in mmqa_global.queries)
    assert [q.id for q in mmqa_global.queries] == [q.id for q in mmqa_context.queries]
    assert set(mmqa_global.images) == set(mmqa_standin.image_records) - {
        mmqa_standin.missing_image_id
    }
    assert set(mmqa_context.texts) <= set(mmqa_global.texts)
    assert mmqa_standin.empty_text_id not in mmqa_global.texts
    assert mmqa_standin.missing_text_id not in mmqa_global.texts


def test_mmqa_passage_text_and_image_refs(mmqa_global, mmqa_standin):
    some_id = next(iter(mmqa_global.texts))
    assert mmqa_global.texts[some_id].startswith(f"Article {some_id[:6]}. ")
    for image_id, ref in mmqa_global.images.items():
        record = mmqa_standin.image_records[image_id]
        assert ref.id == image_id and ref.title == record["title"]
        assert ref.path == mmqa_standin.root / "final_dataset_images" / record["path"]
        assert ref.tsv is None and ref.offset is None


def test_mmqa_skips_are_counted_per_reason(mmqa_context, mmqa_global, mmqa_standin):
    s = mmqa_standin
    table = sum("TableQ" in t for t in s.other_types.values())
    multi = len(s.other_types) - table
    expected = {
        "malformed JSON line (MMQA_dev.jsonl.gz)": 2,
        "malformed JSON line (MMQA_texts.jsonl.gz)": 1,
        "question needs a table": table,
        "question needs several modalities": multi,
        "empty passage": 1,
        "image file missing": 1,
        "gold id not in corpus": 3,
    }
    assert table == 5 and multi == 2
    assert dict(mmqa_context.skipped) == expected
    assert dict(mmqa_global.skipped) == expected
    summary = mmqa_context.summary()
    assert "mmqa dev (context pool)" in summary
    assert "3  gold id not in corpus" in summary and "1  image file missing" in summary
    text_n = len(set(s.text_qids) - s.broken_qids)
    assert f"({text_n} text," in summary


def test_mmqa_image_load_bytes(mmqa_context, mmqa_standin):
    image_id, ref = next(iter(mmqa_context.images.items()))
    data = ref.load_bytes()
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (16, 16)
    assert open_image(ref).getpixel((0, 0)) == pytest.approx(_colour(image_id), abs=8)
    gone = ImageRef(id="x", title="t", path=mmqa_standin.root / "nope.jpg")
    with pytest.raises(FileNotFoundError, match="'x'.*nope.jpg"):
        gone.load_bytes()
    with pytest.raises(ValueError, match="neither a path nor a tsv"):
        ImageRef(id="y", title="t").load_bytes()


def test_mmqa_full_real_dev_question_selection(mmqa_full_dev_root):
    """All 2,441 real dev questions: 721 TextQ and 230 ImageQ + 141 ImageListQ are kept."""
    data = load_mmqa(mmqa_full_dev_root)
    counts = data.modality_counts()
    assert counts == {"text": 721, "image": 371}
    missing = data.skipped.pop("image file missing")  # cited non-gold images have no file
    assert missing > 5000
    assert dict(data.skipped) == {
        "question needs a table": 1280,
        "question needs several modalities": 69,
    }
    assert len(data.queries) + sum(data.skipped.values()) == 2441
    assert all(set(q.gold_ids) <= set(q.pool_ids) for q in data.queries)
    gold_images = {g for q in data.queries if q.gold_modality == "image" for g in q.gold_ids}
    assert set(data.images) == gold_images
    # placeholders are empty files: the loader checked existence only, never decoded pixels
    assert next(iter(data.images.values())).load_bytes() == b""


def test_mmqa_accepts_plain_jsonl(mmqa_standin, tmp_path):
    root = _copy_root(mmqa_standin.root, tmp_path / "plain")
    gz = root / "MMQA_dev.jsonl.gz"
    (root / "MMQA_dev.jsonl").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    data = load_mmqa(root)
    assert len(data.queries) == len(load_mmqa(mmqa_standin.root).queries)
    assert data.source_files[0].name == "MMQA_dev.jsonl"


def test_mmqa_missing_modality_is_an_error(mmqa_standin, tmp_path):
    root = _copy_root(mmqa_standin.root, tmp_path / "textonly")
    text_only = [mmqa_standin.records[q] for q in mmqa_standin.text_qids]
    write_jsonl_gz(root / "MMQA_dev.jsonl.gz", text_only)
    with pytest.raises(ValueError, match="has no image questions"):
        load_mmqa(root)


def test_mmqa_missing_field_and_files(mmqa_standin, tmp_path):
    root = _copy_root(mmqa_standin.root, tmp_path / "nofield")
    record = dict(mmqa_standin.records[mmqa_standin.text_qids[0]])
    del record["supporting_context"]
    write_jsonl_gz(root / "MMQA_dev.jsonl.gz", [record])
    with pytest.raises(ValueError, match="line 1 .*missing field 'supporting_context'"):
        load_mmqa(root)
    with pytest.raises(FileNotFoundError, match="MMQA_train.jsonl.gz not found"):
        load_mmqa(root, split="train")
    (root / "MMQA_texts.jsonl.gz").unlink()
    with pytest.raises(FileNotFoundError, match="MMQA_texts"):
        load_mmqa(root)
    with pytest.raises(ValueError, match="pool must be one of"):
        load_mmqa(mmqa_standin.root, pool="everything")


def test_classify_question():
    assert classify_question("TextQ", {"text"}) == ("text", None)
    assert classify_question("ImageListQ", {"image"}) == ("image", None)
    assert classify_question("Compose(TextQ,TableQ)", {"text", "table"})[1] == (
        "question needs a table"
    )
    assert classify_question("Compose(ImageQ,TextQ)", {"text", "image"})[1] == (
        "question needs several modalities"
    )
    assert classify_question("TextQ", {"image"})[1] == (
        "supporting_context disagrees with metadata.type"
    )
    assert classify_question("TextQ", set())[1] == "question has no supporting_context"


# ----------------------------------------------------------- MMQA: paths stay in the image folder

OUTSIDE = "image path outside the image folder"
INVALID = "image path invalid (empty, NUL byte or symlink loop)"


def _mmqa_with_paths(standin, dst: Path, paths: dict) -> Path:
    """A full copy of the stand-in (image folder included) with new ``path``s for some images."""
    shutil.copytree(standin.root, dst)
    records = [{**r, "path": paths.get(i, r["path"])} for i, r in standin.image_records.items()]
    write_jsonl_gz(dst / "MMQA_images.jsonl.gz", records)
    return dst


def _distractor_images(standin, n: int) -> list[str]:
    """Existing images that are no question's gold: moving them keeps every question."""
    gold = {
        g for r in standin.records.values() for g in (s["doc_id"] for s in r["supporting_context"])
    }
    ids = [i for i in standin.image_records if i not in gold and i != standin.missing_image_id]
    assert len(ids) >= n
    return ids[:n]


def _assert_confined(data, image_dir: Path) -> None:
    base = image_dir.resolve()
    for ref in data.images.values():
        assert ref.path.resolve().is_relative_to(base), ref.path


@pytest.mark.parametrize("pool", ["context", "global"])
def test_mmqa_paths_leaving_the_image_folder_are_skipped(mmqa_standin, tmp_path, pool, caplog):
    secret = tmp_path / "secret.png"
    secret.write_bytes(tiny_image_bytes("secret"))  # a real image, readable, outside the root
    a, b, c, d = _distractor_images(mmqa_standin, 4)
    d_name = mmqa_standin.image_records[d]["path"]
    root = _mmqa_with_paths(
        mmqa_standin,
        tmp_path / "root",
        {
            a: "../../secret.png",  # climbs out of the image folder and the root
            b: str(secret),  # absolute
            c: "../MMQA_dev.jsonl.gz",  # inside the root, outside the image folder
            d: f"sub/../{d_name}",  # normalises to a file inside: fine
        },
    )
    (root / "final_dataset_images" / "sub").mkdir()
    with caplog.at_level("WARNING", logger="mmgap_core.datasets.mmqa"):
        data = load_mmqa(root, pool=pool)
    assert data.skipped[OUTSIDE] == 3
    assert a not in data.images and b not in data.images and c not in data.images
    assert d in data.images
    _assert_confined(data, root / "final_dataset_images")
    assert f"3  {OUTSIDE}" in data.summary()
    messages = [r.getMessage() for r in caplog.records]
    assert any("'../../secret.png'" in m and "outside" in m for m in messages)
    assert len(data.queries) == len(load_mmqa(mmqa_standin.root, pool=pool).queries)


def test_mmqa_symlinks_leaving_the_image_folder_are_skipped(mmqa_standin, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(tiny_image_bytes("secret"))
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    (outside_dir / "x.png").write_bytes(tiny_image_bytes("x"))
    a, b, c, d, e, f = _distractor_images(mmqa_standin, 6)
    inside_target = mmqa_standin.image_records[d]["path"]
    root = _mmqa_with_paths(
        mmqa_standin,
        tmp_path / "root",
        {
            a: "link_out.png",  # a link inside the folder to a file outside it
            b: "ext/x.png",  # through a linked sub-folder that leads outside
            c: "loop.png",  # a symlink loop
            d: "link_in.png",  # a link to another image inside the folder: fine
            e: "",  # the folder itself
            f: "a\x00b.png",  # a NUL byte
        },
    )
    image_dir = root / "final_dataset_images"
    (image_dir / "link_out.png").symlink_to(secret)
    (image_dir / "ext").symlink_to(outside_dir, target_is_directory=True)
    (image_dir / "loop.png").symlink_to(image_dir / "loop.png")
    (image_dir / "link_in.png").symlink_to(image_dir / inside_target)
    data = load_mmqa(root, pool="global")
    assert data.skipped[OUTSIDE] == 2
    assert data.skipped[INVALID] == 3
    assert not {a, b, c, e, f} & set(data.images)
    assert data.images[d].path == image_dir / "link_in.png"
    _assert_confined(data, image_dir)


def test_mmqa_linked_image_folder_is_the_users_choice(mmqa_standin, tmp_path):
    """The image folder itself may be a link (e.g. to another disk): its files are inside it."""
    root = _copy_root(mmqa_standin.root, tmp_path / "linked")
    assert (root / "final_dataset_images").is_symlink()
    data = load_mmqa(root, pool="global")
    assert OUTSIDE not in data.skipped
    assert set(data.images) == set(load_mmqa(mmqa_standin.root, pool="global").images)


# ----------------------------------------------------------------------------------- WebQA


def test_webqa_val_context(webqa_root):
    data = load_webqa(webqa_root, split="val", pool="context")
    by_id = {q.id: q for q in data.queries}
    assert sorted(by_id) == ["v_img1", "v_img2", "v_txt1", "v_txt2"]
    assert by_id["v_txt1"].text == "Who designed the Blue Bridge?"  # literal quotes stripped
    assert by_id["v_txt1"].gold_modality == "text" and by_id["v_txt1"].gold_ids == ("s1",)
    assert by_id["v_txt2"].gold_ids == ("s4", "s5")
    assert by_id["v_img1"].gold_modality == "image" and by_id["v_img1"].gold_ids == ("30000001",)
    assert by_id["v_img2"].gold_ids == ("31234567",)
    assert by_id["v_txt1"].pool_ids == ("s1", "s2", "s3", "30000001", "30000002")
    assert by_id["v_img1"].pool_ids == ("s6", "30000001", "30000004", "20000003")
    assert set(data.texts) == {"s1", "s2", "s3", "s4", "s5", "s6"}
    assert set(data.images) == {
        "30000001",
        "30000002",
        "30000003",
        "30000004",
        "31234567",
        "20000003",
    }
    assert data.texts["s1"] == "Page s1. The Blue Bridge was designed by Ann Lee."
    assert data.images["30000001"].title == "Picture 30000001"  # first mention wins
    assert dict(data.skipped) == {
        "question has both text and image gold facts": 1,
        "question has no gold facts": 1,
        "image not in imgs.tsv": 1,
        "empty passage": 1,
        "gold id not in corpus": 2,
    }
    assert [p.name for p in data.source_files] == [
        "WebQA_train_val.json",
        "imgs.tsv",
        "imgs.lineidx",
    ]


def test_webqa_global_and_train(webqa_root):
    data = load_webqa(webqa_root, split="val", pool="global")
    assert all(q.pool_ids is None for q in data.queries) and len(data.queries) == 4
    assert set(data.texts) == {f"s{i}" for i in range(1, 9)}  # incl. facts of skipped questions
    assert set(data.images) == {
        "30000001",
        "30000002",
        "30000003",
        "30000004",
        "30000005",
        "31234567",
        "20000003",
    }
    assert "s10" not in data.texts  # train facts stay out of the val corpus
    train = load_webqa(webqa_root, split="train")
    assert sorted((q.id, q.gold_modality) for q in train.queries) == [
        ("t_img", "image"),
        ("t_txt", "text"),
    ]
    assert not train.skipped
    with pytest.raises(ValueError, match="no questions with split 'test'"):
        load_webqa(webqa_root, split="test")


def test_webqa_image_load_bytes(webqa_root, webqa_standin):
    data = load_webqa(webqa_root, pool="global")
    for image_id, ref in data.images.items():
        assert ref.tsv == webqa_root / "imgs.tsv" and ref.path is None
        assert ref.load_bytes() == tiny_image_bytes(image_id)
        line = webqa_standin.image_ids.index(int(image_id))
        offsets = (webqa_root / "imgs.lineidx").read_text().split()
        assert ref.offset == int(offsets[line])
    ref = data.images["30000002"]
    with pytest.raises(ValueError, match="holds image '30000001' instead"):
        ImageRef(
            id=ref.id, title="", tsv=ref.tsv, offset=data.images["30000001"].offset
        ).load_bytes()
    with pytest.raises(FileNotFoundError, match="image store"):
        ImageRef(id="1", title="", tsv=webqa_root / "nope.tsv", offset=0).load_bytes()


def test_webqa_bad_base64_and_bad_input(tmp_path):
    root = write_webqa(tmp_path / "w", {}, [30000000])
    (root / "imgs.tsv").write_bytes(b"30000000\tnot base64!!\n")
    with pytest.raises(ValueError, match="invalid base64"):
        ImageRef(id="30000000", title="", tsv=root / "imgs.tsv", offset=0).load_bytes()
    records = {"g1": webqa_record("g1", "val", "q?", txt_pos=[_txt_fact("s1", "x")])}
    del records["g1"]["img_negFacts"]
    write_webqa(root, records, [30000000])
    with pytest.raises(ValueError, match="record 'g1'.*missing field 'img_negFacts'"):
        load_webqa(root)
    records = {"g1": webqa_record("g1", "val", "q?", txt_pos=[{"fact": "x", "title": "t"}])}
    write_webqa(root, records, [30000000])
    with pytest.raises(ValueError, match="txt_posFacts: missing field 'snippet_id'"):
        load_webqa(root)
    records = {"g1": webqa_record("g1", "val", "q?", txt_pos=[_txt_fact("s1", "x")])}
    del records["g1"]["Q"]
    write_webqa(root, records, [30000000])
    with pytest.raises(ValueError, match="missing field 'Q'"):
        load_webqa(root)
    (root / "WebQA_train_val.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_webqa(root)
    (root / "imgs.lineidx").unlink()
    with pytest.raises(FileNotFoundError, match="imgs.lineidx"):
        load_webqa(root)


def test_webqa_missing_modality_is_an_error(tmp_path):
    records = {
        "a": webqa_record(
            "a", "val", "q1?", txt_pos=[_txt_fact("s1", "fact one")], img_neg=[_img_fact(30000000)]
        ),
        "b": webqa_record("b", "val", "q2?", img_pos=[_img_fact(30000000)], qcate="color"),
    }
    root = write_webqa(tmp_path / "w", records, [30000001])  # the only gold image is absent
    with pytest.raises(ValueError, match="has no image questions") as info:
        load_webqa(root)
    assert "image not in imgs.tsv" in str(info.value)


def test_webqa_image_ids_are_never_paths(tmp_path, monkeypatch):
    """Image ids are looked up in imgs.tsv, never joined to a path: a path-like id is absent."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"30000000\t" + base64.b64encode(tiny_image_bytes("s")) + b"\n")
    odd_ids = ["../secret", "../../secret", str(secret), "/etc/passwd", "\u00b2"]  # "²" isdigit
    records = {
        "t": webqa_record(
            "t",
            "val",
            "text q?",
            txt_pos=[_txt_fact("s1", "one")],
            img_neg=[_img_fact(i) for i in odd_ids] + [_img_fact(30000000)],
        ),
        "i": webqa_record("i", "val", "image q?", img_pos=[_img_fact(30000000)]),
        "o": webqa_record("o", "val", "odd gold?", img_pos=[_img_fact("../secret")]),
    }
    root = write_webqa(tmp_path / "w", records, [30000000])
    opened: list[Path] = []
    real_open = Path.open

    def spy(self, *args, **kwargs):
        opened.append(self)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy)
    for pool in ("context", "global"):
        data = load_webqa(root, pool=pool)
        assert set(data.images) == {"30000000"}
        assert data.skipped["image not in imgs.tsv"] == len(odd_ids)
        assert data.skipped["gold id not in corpus"] == 1
        assert all(ref.tsv == root / "imgs.tsv" for ref in data.images.values())
    base = root.resolve()
    assert opened and all(p.resolve().is_relative_to(base) for p in opened)


# --------------------------------------------------------------------------- detect / dispatch


def test_detect_and_load_mmqa(mmqa_root):
    assert detect_dataset(mmqa_root) == "mmqa"
    data = load_dataset("auto", mmqa_root, pool="global")
    assert (data.name, data.split, data.pool) == ("mmqa", "dev", "global")
    with pytest.raises(ValueError, match="unknown dataset 'coco'"):
        load_dataset("coco", mmqa_root)


def test_detect_and_load_dataset(webqa_root, tmp_path):
    assert detect_dataset(webqa_root) == "webqa"
    assert load_dataset(None, webqa_root).split == "val"
    assert load_dataset("WebQA", webqa_root, split="train").split == "train"
    with pytest.raises(ValueError, match="no recognisable dataset in .*expected MMQA_"):
        detect_dataset(tmp_path)
    with pytest.raises(ValueError, match="no recognisable dataset in .*not a directory"):
        detect_dataset(tmp_path / "missing")
    both = tmp_path / "both"
    both.mkdir()
    (both / "MMQA_dev.jsonl.gz").touch()
    (both / "WebQA_train_val.json").touch()
    with pytest.raises(ValueError, match="both MMQA and WebQA"):
        detect_dataset(both)


# ------------------------------------------------------------------------------- captioning


def test_metadata_captioner_indexes_images_as_titles(mmqa_context, mmqa_standin):
    captioner = MetadataCaptioner()
    assert isinstance(captioner, Captioner)
    captions = caption_corpus(mmqa_context.images, captioner, batch_size=7)
    assert list(captions) == list(mmqa_context.images)
    for image_id, text in captions.items():
        assert text == mmqa_standin.image_records[image_id]["title"].strip()
    # captions can join the text corpus: images become retrievable text-to-text
    merged = {**mmqa_context.texts, **captions}
    assert len(merged) == len(mmqa_context.texts) + len(mmqa_context.images)


def test_metadata_captioner_sources(webqa_root):
    data = load_webqa(webqa_root)
    refs = [data.images["30000001"], data.images["31234567"]]
    mapped = MetadataCaptioner({"30000001": "a red roof", "31234567": "a stone gate"})
    assert mapped.caption(refs) == ["a red roof", "a stone gate"]
    assert mapped.caption(["/x/30000001.jpg"]) == ["a red roof"]  # path stem is the id
    with pytest.raises(ValueError, match="no caption for image id '30000002'"):
        mapped.caption([data.images["30000002"]])
    called = MetadataCaptioner(lambda ref: f"photo of {ref.title}", name="fn")
    assert called.caption(refs) == ["photo of Picture 30000001", "photo of Gate"]
    with pytest.raises(TypeError, match="ImageRef.title"):
        MetadataCaptioner().caption([b"raw"])
    with pytest.raises(ValueError, match="empty"):
        MetadataCaptioner().caption([ImageRef(id="z", title=" ")])
    with pytest.raises(TypeError, match="source must be"):
        MetadataCaptioner(42)


def test_caption_corpus_validates_captioner(webqa_root):
    images = load_webqa(webqa_root).images

    class Short:
        name = "short"

        def caption(self, images):
            return ["x"] * (len(images) - 1)

    class Blank:
        name = "blank"

        def caption(self, images):
            return [""] * len(images)

    with pytest.raises(ValueError, match="'short' returned 1 captions for 2 images"):
        caption_corpus(images, Short(), batch_size=2)
    with pytest.raises(ValueError, match="empty caption for image"):
        caption_corpus(images, Blank())
    with pytest.raises(TypeError, match="captioner must have"):
        caption_corpus(images, object())
    with pytest.raises(ValueError, match="batch_size"):
        caption_corpus(images, MetadataCaptioner(), batch_size=0)
