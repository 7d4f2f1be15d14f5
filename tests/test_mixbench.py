"""MixBench loading: the documented layout, jsonl and parquet, GR-CLIP's 1:1:1 split, bad input."""

from __future__ import annotations

import collections
import random
import sys

import numpy as np
import pytest

from _fixtures_data import MIXBENCH_SUBSET, mixbench_records, write_mixbench
from mmgap_core.datasets import KINDS, load_dataset, load_mixbench
from mmgap_core.datasets.mixbench import assign_kinds, find_split
from mmgap_core.fusion import CenterFusion
from mmgap_core.fusion_grclip import GRClipFusion
from mmgap_core.mining import topk_per_modality
from mmgap_core.candidates import CandidateBatch
from mmgap_core.reproduce.corpus import check_alpha, fuse_documents
from mmgap_core.reproduce.cache import Embedded


def _grclip_script_modes(n: int) -> list[str]:
    """GR-CLIP's src/retrieval_mixbench.py, literally (global ``random``, state restored)."""
    state = random.getstate()
    try:
        corpus = [{} for _ in range(n)]
        random.seed(42)
        perm = random.sample(range(len(corpus)), len(corpus))
        for i in range(len(corpus)):
            corpus[perm[i]]["mode"] = ["text", "image", "mixed"][i % 3]
    finally:
        random.setstate(state)
    return [{"mixed": "multimodal"}.get(c["mode"], c["mode"]) for c in corpus]


def _kind_of(data) -> dict[str, str]:
    out = {**dict.fromkeys(data.texts, "text"), **dict.fromkeys(data.images, "image")}
    return {**out, **dict.fromkeys(data.documents, "multimodal")}


# ------------------------------------------------------------------------------- the layout


def test_loads_the_documented_layout(mixbench_root):
    data = load_mixbench(mixbench_root, MIXBENCH_SUBSET)
    assert (data.name, data.split, data.pool, data.kinds) == ("mixbench", "MSCOCO", "global", KINDS)
    assert data.corpus_counts() == {"text": 4, "image": 4, "multimodal": 4}
    assert data.modality_counts() == {"text": 4, "image": 4, "multimodal": 4}
    assert not data.skipped
    images = mixbench_root / MIXBENCH_SUBSET / "images"
    for doc in data.documents.values():
        assert doc.text.startswith("thing number") and doc.image.path.parent == images / "img"
    for q in data.queries:
        assert q.gold_scores == (1,) and len(q.gold_ids) == 1
        assert q.gold_modality == _kind_of(data)[q.gold_ids[0]]
    assert "corpus kinds from: corpus.jsonl, seeded 1:1:1 (seed 42)" in data.summary()
    # --root may also be the subset folder itself, and load_dataset reaches the same loader
    same = load_dataset("mixbench", mixbench_root / MIXBENCH_SUBSET, pool=None, subset="MSCOCO")
    assert _kind_of(same) == _kind_of(data)


@pytest.mark.parametrize("n", [1, 2, 12, 100])
def test_kinds_follow_grclip_script_exactly(n):
    ids = [f"c{i}" for i in range(n)]
    kinds = assign_kinds(ids)
    assert [kinds[i] for i in ids] == _grclip_script_modes(n)


def test_kind_assignment_uses_items_with_text_and_image_in_file_order(tmp_path):
    recs = mixbench_records(12)
    recs["corpus"][3]["image"] = None  # no image: dropped before the split, as in GR-CLIP
    root = write_mixbench(tmp_path, recs)
    data = load_mixbench(root, MIXBENCH_SUBSET)
    assert data.skipped == {
        "corpus item: no image field": 1,
        "relevant corpus id not in the corpus": 1,
        "query without a relevant corpus item": 1,
    }
    kept = [f"c{i}" for i in range(12) if i != 3]
    assert [_kind_of(data)[c] for c in kept] == _grclip_script_modes(11)


def test_parquet_equals_jsonl(tmp_path, mixbench_root):
    root = write_mixbench(tmp_path, mixbench_records(12), fmt="parquet")
    assert find_split(root / MIXBENCH_SUBSET, "query").name == "query.parquet"
    a, b = load_mixbench(mixbench_root, MIXBENCH_SUBSET), load_mixbench(root, MIXBENCH_SUBSET)
    assert _kind_of(a) == _kind_of(b) and a.queries == b.queries and a.texts == b.texts


def test_mixed_corpus_sets_the_kinds(tmp_path):
    recs = mixbench_records(9, mixed=True)
    recs["mixed_corpus"][2]["modality"] = "image"  # an explicit kind wins over the fields
    root = write_mixbench(tmp_path, recs)
    data = load_mixbench(root, MIXBENCH_SUBSET)
    assert "mixed_corpus.jsonl" in data.meta["corpus_kinds_from"]
    assert _kind_of(data) == {
        **{f"c{i}": "text" for i in (0, 3, 6)},
        **{f"c{i}": "image" for i in (1, 2, 4, 7)},
        **{f"c{i}": "multimodal" for i in (5, 8)},
    }
    ignored = load_mixbench(root, MIXBENCH_SUBSET, use_mixed_corpus=False)
    assert ignored.corpus_counts() == {"text": 3, "image": 3, "multimodal": 3}


def test_graded_and_mixed_kind_gold(tmp_path):
    recs = mixbench_records(9, mixed=True)
    recs["qrel"] += [
        {"query_id": "q0", "corpus_id": "c1", "score": 2},  # text + image gold: "mixed"
        {"query_id": "q3", "corpus_id": "c4", "score": 0},  # judged non-relevant
        {"query_id": "q3", "corpus_id": "nope", "score": 1},
        {"query_id": "q99", "corpus_id": "c1", "score": 1},
    ]
    data = load_mixbench(write_mixbench(tmp_path, recs), MIXBENCH_SUBSET)
    q = {x.id: x for x in data.queries}
    assert q["q0"].gold_modality == "mixed" and dict(
        zip(q["q0"].gold_ids, q["q0"].gold_scores)
    ) == {
        "c0": 1,
        "c1": 2,
    }
    assert q["q3"].gold_ids == ("c3",)
    assert data.skipped == {
        "relevant corpus id not in the corpus": 1,
        "qrel of a missing or skipped query": 1,
    }


# ------------------------------------------------------------------------------- bad input


def test_bad_records_are_skipped_with_a_reason(tmp_path):
    recs = mixbench_records(12)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not for reading")
    recs["corpus"][0]["image"] = "../../outside.png"
    recs["corpus"][1]["text"] = "  "
    recs["corpus"].append(dict(recs["corpus"][2]))  # duplicate id
    recs["query"][4]["text"] = ""
    lines = {"query": ["{not json", "[1, 2]"], "corpus": ["nope"]}
    root = write_mixbench(tmp_path / "r", recs, extra_lines=lines, skip_images=("img/005.png",))
    data = load_mixbench(root, MIXBENCH_SUBSET)
    assert data.skipped == {
        "corpus item: image path outside the image folder": 1,
        "corpus item: empty text": 1,
        "corpus item: image file missing": 1,
        "duplicate corpus id": 1,
        "empty query text": 1,
        "malformed JSON line (query.jsonl)": 2,
        "malformed JSON line (corpus.jsonl)": 1,
        "relevant corpus id not in the corpus": 3,
        "query without a relevant corpus item": 3,
        "qrel of a missing or skipped query": 1,
    }
    assert {"c0", "c1", "c5"}.isdisjoint(_kind_of(data))
    assert len(data.queries) == 12 - 4


def test_multimodal_item_with_missing_image_is_skipped(tmp_path):
    recs = mixbench_records(9, mixed=True)
    root = write_mixbench(tmp_path, recs, skip_images=("img/005.png", "img/004.png"))
    data = load_mixbench(root, MIXBENCH_SUBSET)
    assert data.skipped["multimodal item: image file missing"] == 1
    assert data.skipped["image item: image file missing"] == 1
    assert "c5" not in data.documents and "c4" not in data.images
    assert "c8" in data.documents


def test_missing_split_missing_images_folder_and_missing_id(tmp_path):
    root = write_mixbench(tmp_path / "a", mixbench_records(6))
    (root / MIXBENCH_SUBSET / "qrel.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="the qrel split .* is missing in"):
        load_mixbench(root, MIXBENCH_SUBSET)
    with pytest.raises(FileNotFoundError, match="no query split for subset OVEN"):
        load_mixbench(root, "OVEN")
    with pytest.raises(ValueError, match="unknown MixBench subset 'COCO'"):
        load_mixbench(root, "COCO")
    recs = mixbench_records(6)
    del recs["corpus"][2]["corpus_id"]
    root = write_mixbench(tmp_path / "b", recs)
    with pytest.raises(ValueError, match=r"corpus.jsonl line 3: missing field 'corpus_id'"):
        load_mixbench(root, MIXBENCH_SUBSET)
    with pytest.raises(ValueError, match="no per-question pools"):
        load_mixbench(root, MIXBENCH_SUBSET, pool="context")
    (root / MIXBENCH_SUBSET / "images").rename(root / MIXBENCH_SUBSET / "imgs")
    with pytest.raises(FileNotFoundError, match="no image folder"):
        load_mixbench(root, MIXBENCH_SUBSET)


def test_no_usable_query_is_an_error(tmp_path):
    recs = mixbench_records(3)
    recs["qrel"] = []
    with pytest.raises(ValueError, match="no query with a relevant corpus item"):
        load_mixbench(write_mixbench(tmp_path, recs), MIXBENCH_SUBSET)


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    root = write_mixbench(tmp_path, mixbench_records(6), fmt="parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r'pip install "mmgap\[parquet\]"'):
        load_mixbench(root, MIXBENCH_SUBSET)


def test_corrupt_parquet_is_a_value_error(tmp_path):
    root = write_mixbench(tmp_path, mixbench_records(6))
    (root / MIXBENCH_SUBSET / "query.jsonl").unlink()
    (root / MIXBENCH_SUBSET / "query.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="cannot read"):
        load_mixbench(root, MIXBENCH_SUBSET)


def test_load_dataset_arguments(mixbench_root, webqa_root):
    with pytest.raises(ValueError, match="needs a subset"):
        load_dataset("mixbench", mixbench_root)
    with pytest.raises(ValueError, match="no split to choose"):
        load_dataset("mixbench", mixbench_root, split="dev", subset="MSCOCO")
    with pytest.raises(ValueError, match="MixBench only"):
        load_dataset("webqa", webqa_root, subset="MSCOCO")
    assert load_dataset("auto", mixbench_root, pool=None, subset="MSCOCO").name == "mixbench"


# ------------------------------------------------------------------------ mixing and grclip


def _embedded(vectors) -> Embedded:
    v = np.asarray(vectors, dtype=np.float32)
    return Embedded({f"k{i}": i for i in range(len(v))}, v, {})


def test_fuse_documents_mixes_normalised_vectors():
    rng = np.random.default_rng(0)
    t, v = rng.standard_normal((3, 8)) * 3, rng.standard_normal((3, 8))
    keys = [f"k{i}" for i in range(3)]
    args = (["a", "b", "c"], keys, keys, _embedded(t), _embedded(v))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    for alpha in (0.0, 0.3, 0.5, 1.0):
        ids, out = fuse_documents(*args, alpha, collections.Counter())
        want = unit(alpha * unit(t) + (1 - alpha) * unit(v))
        assert ids == ["a", "b", "c"]
        np.testing.assert_allclose(out, want, atol=1e-6)
    skipped = collections.Counter()
    ids, out = fuse_documents(
        ["a"], ["k0"], ["k0"], _embedded(t[:1]), _embedded(-t[:1]), 0.5, skipped
    )
    assert (
        ids == []
        and out.shape == (0, 8)
        and skipped == {"document: text and image vectors cancel out": 1}
    )
    for bad in (-0.1, 1.5, "x", True):
        with pytest.raises(ValueError, match="alpha"):
            check_alpha(bad)


def test_grclip_is_center_with_its_own_query_mean():
    rng = np.random.default_rng(1)
    corpus = rng.standard_normal((60, 16))
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    labels = np.array(["text", "image", "multimodal"] * 20)
    queries = rng.standard_normal((5, 16)) + 2.0
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    top = topk_per_modality(queries, corpus, labels, 20)
    batch = CandidateBatch.from_topk(top, "text", query_embeddings=queries, corpus=corpus)
    gr = GRClipFusion.fit(queries, corpus, labels)
    np.testing.assert_allclose(gr.query_mean, queries.mean(axis=0))
    center = CenterFusion.fit(corpus, labels)
    same = GRClipFusion(center.means, center.means["text"])
    for m, s in same.score(batch).items():
        np.testing.assert_allclose(s, center.score(batch)[m])
    # With its own query mean the scores differ from center's (query mean != corpus text mean).
    assert not np.allclose(gr.score(batch)["image"], center.score(batch)["image"])
    q = queries - queries.mean(axis=0)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ids, _ = top.of("image")
    d = corpus[ids] - corpus[labels == "image"].mean(axis=0)
    d /= np.linalg.norm(d, axis=2, keepdims=True)
    np.testing.assert_allclose(gr.score(batch)["image"], np.einsum("qd,qkd->qk", q, d), atol=1e-6)
    with pytest.raises(ValueError, match="no mean embedding for modality 'text'"):
        GRClipFusion({"audio": np.zeros(16)}, np.zeros(16)).score(batch)
