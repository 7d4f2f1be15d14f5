"""The third modality, ``multimodal``: text+image documents indexed, calibrated and searched
together with texts and images, through ``engine.index`` and the ``mmgap`` command (embedded and on
a ``chroma run`` server). Issue 12's "done when": a folder of ``.jsonl`` product records with images
and descriptions gives one calibrated ranking over texts, images and multimodal documents."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _fixtures_clip import model_args

from mmgap_core.encoders.base import check_alpha, mix_document_vectors
from mmgap_core.indexing import ALPHA_FIELD
from mmgap_core.results import BATCH_KEY, document_id
from mmgap_core.store import ChromaStore

MODALITIES = {"text", "image", "multimodal"}
DESCRIPTIONS = [
    "an astronaut action figure in a white suit",
    "a bag of freshly roasted coffee beans",
    "a plush tabby cat toy",
    "a vintage camera with a leather strap",
    "a bright red ceramic bowl",
    "a deep blue silk scarf",
]
TEXT_ONLY = ["a gift card for any occasion", "a warranty extension for two years"]


def _docs(sample_images):
    return [{"text": t, "image": p} for t, p in zip(DESCRIPTIONS, sample_images)]


@pytest.fixture
def three_kinds(engine, sample_images):
    docs = _docs(sample_images)
    report = engine.index(
        texts=TEXT_ONLY + ["a red bowl", "a cat"],
        images=sample_images[6:],
        documents=docs,
        document_metadatas=[{"sku": f"p{i}", "price": 9.5 + i} for i in range(len(docs))],
        progress=False,
    )
    assert report.added == {"text": 4, "image": 2, "multimodal": 6}, report.summary()
    return engine


def test_documents_get_their_own_collection_and_the_mixed_vector(three_kinds, tiny_encoder):
    store = three_kinds.store
    assert store.counts() == {"text": 4, "image": 2, "multimodal": 6}
    assert store.read_manifest()[ALPHA_FIELD] == 0.5
    ids, docs, emb = store.sample_documents("multimodal", 10, 0)
    doc = dict(zip(docs, emb))[DESCRIPTIONS[0]]
    t = tiny_encoder.embed_texts([DESCRIPTIONS[0]]).vectors[0]
    path = store.client.get_collection(store.collection_name("multimodal")).get(
        ids=[i for i, d in zip(ids, docs) if d == DESCRIPTIONS[0]], include=["uris"]
    )["uris"][0]
    v = tiny_encoder.embed_images([path]).vectors[0]
    want = (0.5 * t + 0.5 * v) / np.linalg.norm(0.5 * t + 0.5 * v)
    assert np.allclose(doc, want, atol=1e-5)
    assert np.linalg.norm(doc) == pytest.approx(1.0, abs=1e-5)


def test_content_id_comes_from_both_parts(sample_images):
    a, b = (Path(p).read_bytes() for p in sample_images[:2])
    assert document_id("x", a) != document_id("x", b) != document_id("y", b)
    assert document_id("x", a) == document_id("x", a)
    assert document_id("ab", b"c") != document_id("a", b"bc")  # length-prefixed
    assert document_id("x", a).startswith("multimodal-")


def test_reindexing_adds_nothing_and_counts_in_one_line(three_kinds, sample_images):
    again = three_kinds.index(documents=_docs(sample_images), progress=False)
    assert again.n_added == 0 and again.already_indexed == {"multimodal": 6}
    lines = again.summary().splitlines()
    assert lines == ["added nothing; skipped 6", "  already indexed: 6 (6 multimodal)"]


def test_one_calibrated_ranking_over_three_kinds(three_kinds, sample_images):
    std = three_kinds.calibrate(progress=False)
    assert {(q, c) for q in MODALITIES for c in MODALITIES} <= set(std.keys_)
    res = three_kinds.search("a red ceramic bowl", k=12)
    assert {h.modality for h in res} == MODALITIES
    assert [h.rank for h in res] == list(range(1, 13))
    assert all(a.score >= b.score for a, b in zip(res.hits, res.hits[1:]))
    for h in res:
        assert BATCH_KEY not in h.metadata and h.metadata["modality"] == h.modality
        if h.modality == "multimodal":
            assert h.text in DESCRIPTIONS and Path(h.uri).is_file()
            assert h.metadata["mime_type"] in ("image/png", "image/jpeg")
            assert h.metadata["sku"].startswith("p")
        elif h.modality == "image":
            assert h.text is None and Path(h.uri).is_file()
        else:
            assert h.text and h.uri is None
    for method in ("standardize", "raw", "center"):
        assert {h.modality for h in three_kinds.search("a cat", k=12, method=method)} == MODALITIES
    # an image query ranks all three kinds too
    assert {h.modality for h in three_kinds.search(image=sample_images[0], k=12)} == MODALITIES


def test_a_multimodal_store_item_as_probe_query(three_kinds):
    three_kinds.calibrate(progress=False)
    ids, _docs, emb = three_kinds.store.sample_documents("multimodal", 1, 0)
    res = three_kinds.search(embedding=emb[0], query_modality="multimodal", k=3)
    assert res.hits[0].id == ids[0]


def test_alpha_is_recorded_and_another_refused(engine, sample_images):
    engine.index(documents=_docs(sample_images)[:2], alpha=0.25, progress=False)
    assert engine.store.read_manifest()[ALPHA_FIELD] == 0.25
    with pytest.raises(ValueError, match="alpha=0.25; refusing alpha=0.5") as err:
        engine.index(documents=_docs(sample_images)[2:4], alpha=0.5, progress=False)
    assert "\n" not in str(err.value)
    assert engine.store.count("multimodal") == 2  # nothing written by the refused run
    report = engine.index(documents=_docs(sample_images)[2:4], progress=False)  # the store's alpha
    assert report.added == {"multimodal": 2}
    engine.index(texts=["a text"], alpha=0.25, progress=False)  # the same alpha is fine


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_alpha_must_be_a_weight(bad, engine, sample_images):
    if bad is None:
        assert check_alpha(0) == 0.0 and check_alpha(1) == 1.0
        return
    with pytest.raises(ValueError, match="alpha must be a number in"):
        engine.index(documents=_docs(sample_images)[:1], alpha=bad, progress=False)
    assert "multimodal" not in engine.store.counts()


def test_mixing_weights_and_cancelling_vectors():
    t = np.array([[1.0, 0.0], [1.0, 0.0]])
    v = np.array([[0.0, 2.0], [-1.0, 0.0]])
    out, ok = mix_document_vectors(t, v, 0.5)
    assert ok.tolist() == [True, False]
    assert np.allclose(out, [[2**-0.5, 2**-0.5]])
    only_text, _ = mix_document_vectors(t[:1], v[:1], 1.0)
    assert np.allclose(only_text, [[1.0, 0.0]])


def test_bad_documents_are_skipped_with_reasons(engine, sample_images, tmp_path):
    good = sample_images[0]
    docs = [
        {"text": "fine", "image": good},
        {"text": "no image here", "image": tmp_path / "missing.png"},
        {"text": "   ", "image": good},
        {"text": "text only"},
        {"image": good},
        {"text": "typo", "img": good},
        "not a mapping",
        {"text": "bytes image", "image": good.read_bytes()},
        {"text": "fine", "image": good},
        {"text": "empty bytes", "image": b""},
        {"text": 42, "image": good},
        {"text": "pil", "image": __import__("PIL.Image").Image.open(good)},
    ]
    report = engine.index(documents=docs, progress=False)
    reasons = {s.source: s.reason for s in report.skipped}
    assert report.added == {"multimodal": 3}, report.summary()
    assert reasons["documents[1]"].startswith("image: file not found:")
    assert str(tmp_path / "missing.png") in reasons["documents[1]"]
    assert reasons["documents[2]"] == "empty text"
    assert "needs both 'text' and 'image'" in reasons["documents[3]"]
    assert "needs both 'text' and 'image'" in reasons["documents[4]"]
    assert "unknown document keys ['img']" in reasons["documents[5]"]
    assert "not a mapping" in reasons["documents[6]"]
    assert reasons["documents[8]"] == "duplicate of documents[0]"
    assert reasons["documents[9]"].startswith("image: empty bytes")
    assert reasons["documents[10]"] == "not a string: int"
    stored = engine.store.client.get_collection(engine.store.collection_name("multimodal")).get(
        include=["uris", "metadatas", "documents"]
    )
    by_text = dict(zip(stored["documents"], zip(stored["uris"], stored["metadatas"])))
    assert by_text["bytes image"][0] is None and by_text["bytes image"][1]["mime_type"]
    assert by_text["fine"][0] == str(Path(good).resolve())


# ------------------------------------------------------------------------ the mmgap command
def _write_catalog(root: Path, sample_images) -> Path:
    """A shop folder: product records (image + description), a text-only and an image-only
    record, bad lines, a loose photo and loose notes."""
    (root / "images").mkdir(parents=True)
    (root / "notes").mkdir()
    for p in sample_images:
        shutil.copy(p, root / "images" / p.name)
    lines = [
        {"text": d, "image": f"images/{p.name}", "sku": f"p{i}", "price": 10 + i}
        for i, (d, p) in enumerate(zip(DESCRIPTIONS, sample_images))
    ]
    lines.append({"text": TEXT_ONLY[0], "sku": "gift"})
    lines.append({"image": f"images/{sample_images[6].name}", "sku": "photo-only"})
    lines.append({"text": "a lost product", "image": "images/nope.png", "sku": "lost"})
    lines.append({"text": "a reserved key", "modality": "image"})
    body = "\n".join(json.dumps(r) for r in lines) + "\n{broken json\n"
    (root / "catalog.jsonl").write_text(body, encoding="utf-8")
    (root / "notes" / "shipping.txt").write_text("Shipping takes two days.", encoding="utf-8")
    (root / "notes" / "returns.md").write_text("# Returns\nWithin 30 days.", encoding="utf-8")
    return root


def _cli_session(conn, root, tiny_clip, capsys, sample_images):
    from mmgap_core.cli import main

    conn_model = [*conn, *model_args(tiny_clip)]
    assert main(["index", str(root), "--quiet", *conn_model]) == 0
    out = capsys.readouterr().out
    # 6 product documents, the gift card + 2 notes, the photo-only record + the loose photo
    assert "added 2 image, 6 multimodal, 3 text; skipped 3" in out, out
    assert main(["index", str(root), *conn_model]) == 0
    out = capsys.readouterr().out
    assert "already indexed: 11 (2 image, 6 multimodal, 3 text)" in out, out
    assert "catalog.jsonl:9" in out and "file not found" in out and "nope.png" in out
    assert "catalog.jsonl:10" in out and "'modality' is reserved" in out
    assert "catalog.jsonl:11" in out and "malformed JSON line" in out
    assert "image files belong to .jsonl records" in out
    assert main(["calibrate", *conn]) == 0
    out = capsys.readouterr().out
    assert "text query -> multimodal" in out and "multimodal query -> image" in out
    assert main(["search", "a roasted coffee", "-k", "11", "--json", *conn_model]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert {h["modality"] for h in hits} == MODALITIES
    doc = next(h for h in hits if h["modality"] == "multimodal")
    assert doc["text"] in DESCRIPTIONS and Path(doc["uri"]).parent == (root / "images").resolve()
    assert doc["metadata"]["sku"].startswith("p") and doc["metadata"]["mime_type"]
    assert doc["metadata"]["source"].startswith(f"{root / 'catalog.jsonl'}:")
    plot = root.parent / "gap.png"
    assert main(["inspect", "-k", "3", "--sample", "5", "--plot", str(plot), *conn]) == 0
    out = capsys.readouterr().out
    assert "5 multimodal probe queries" in out and plot.stat().st_size > 5000
    assert main(["index", str(root), "--alpha", "0.3", "--quiet", *conn_model]) == 2
    assert "refusing alpha=0.3" in capsys.readouterr().err


def test_cli_product_catalog_embedded(tmp_path, tiny_clip, capsys, sample_images):
    root = _write_catalog(tmp_path / "shop", sample_images)
    _cli_session(["--db", str(tmp_path / "db")], root, tiny_clip, capsys, sample_images)


@pytest.mark.server
def test_cli_product_catalog_on_a_server(
    tmp_path, tiny_clip, capsys, sample_images, chroma_server, chroma_store_name
):
    root = _write_catalog(tmp_path / "shop", sample_images)
    conn = ["--host", chroma_server.host, "--port", str(chroma_server.port)]
    conn += ["--name", chroma_store_name]
    try:
        _cli_session(conn, root, tiny_clip, capsys, sample_images)
    finally:
        ChromaStore(chroma_server.client(), chroma_store_name).delete_store()


def test_installed_mmgap_command_indexes_a_catalog(tmp_path, tiny_clip, sample_images):
    exe = Path(sys.executable).parent / "mmgap"
    if not exe.exists():
        pytest.fail(f"the installed `mmgap` console script is missing: {exe}")
    root = _write_catalog(tmp_path / "shop", sample_images)
    env = dict(os.environ, HF_HUB_OFFLINE="1", ANONYMIZED_TELEMETRY="False")
    db = ["--db", str(tmp_path / "db")]
    run = subprocess.run(
        [str(exe), "index", str(root), "--quiet", *db, *model_args(tiny_clip)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "added 2 image, 6 multimodal, 3 text; skipped 3" in run.stdout
    assert "Traceback" not in run.stderr
    run = subprocess.run(
        [str(exe), "index", str(tmp_path / "nonexistent"), *db],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "nonexistent" in run.stderr
