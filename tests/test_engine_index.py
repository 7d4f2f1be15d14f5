"""``RetrievalEngine.index`` on hostile and concurrent input: thin images skipped before decoding
(peak memory of a real process under 3 GB), one refused item loses only itself, concurrent indexers
count only what they wrote, re-index reports counts first, the model check comes first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from _fixtures_clip import write_png_1bit
from _peak_memory import PEAK_RSS_SOURCE
from mmgap_core.engine import RetrievalEngine
from mmgap_core.index_prepare import check_metadata
from mmgap_core.results import ALREADY_INDEXED, IndexReport, SkippedItem
from mmgap_core.store import ChromaStore

TEXTS = [f"product number {i} in the catalogue" for i in range(12)]
PEAK_LIMIT_BYTES = 3 * 2**30


def _peak_rss(code: str, timeout: int = 300) -> tuple[int, str]:
    """Run ``code`` in a fresh interpreter; (its peak RSS in bytes, its stdout)."""
    wrapped = PEAK_RSS_SOURCE + code + "\nprint('PEAK', peak_rss_bytes())\n"
    env = dict(os.environ, HF_HUB_OFFLINE="1", ANONYMIZED_TELEMETRY="False")
    run = subprocess.run(
        [sys.executable, "-c", wrapped], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    peak = int(run.stdout.strip().splitlines()[-1].split()[1])
    return peak, run.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="resource.getrusage is POSIX-only")
def test_thin_png_is_skipped_before_decoding_with_bounded_memory(tmp_path, tiny_clip):
    thin = write_png_1bit(tmp_path / "thin.png", 1, 40000)
    assert thin.stat().st_size < 1000
    model = dict(
        name=tiny_clip.model_name,
        ckpt=str(tiny_clip.checkpoint_path),
        cfg=str(tiny_clip.config_path),
    )
    code = textwrap.dedent(f"""
        from mmgap_core.encoders.open_clip import OpenClipEncoder
        from mmgap_core.engine import RetrievalEngine
        from mmgap_core.store import ChromaStore
        enc = OpenClipEncoder({model["name"]!r}, pretrained={model["ckpt"]!r},
                              model_config={model["cfg"]!r}, device="cpu")
        eng = RetrievalEngine(ChromaStore.persistent({str(tmp_path / "db")!r}, "thin"), enc)
        rep = eng.index(texts=["a line"], images=[{str(thin)!r}],
                        documents=[{{"text": "a thin product", "image": {str(thin)!r}}}],
                        progress=False)
        print(rep.summary())
    """)
    peak, out = _peak_rss(code)
    assert "added 1 text; skipped 2" in out
    assert f"skipped {thin} (image): image too thin or too wide: '{thin}'" in out
    assert "skipped documents[0] (multimodal): image: image too thin" in out
    assert peak < PEAK_LIMIT_BYTES, f"peak RSS {peak / 2**20:.0f} MiB"

    # and through the command line, a .jsonl record naming it
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "thin.png").write_bytes(thin.read_bytes())
    (tmp_path / "shop" / "p.jsonl").write_text(json.dumps({"text": "x", "image": "thin.png"}))
    argv = ["index", str(tmp_path / "shop"), "--db", str(tmp_path / "db2"), "--quiet"]
    argv += [
        "--model",
        model["name"],
        "--pretrained",
        model["ckpt"],
        "--model-config",
        model["cfg"],
    ]
    code = f"from mmgap_core.cli import main\nassert main({argv!r}) == 0\n"
    peak, out = _peak_rss(code)
    assert "added nothing; skipped 1" in out
    assert peak < PEAK_LIMIT_BYTES, f"peak RSS {peak / 2**20:.0f} MiB"


def test_a_store_refusal_loses_only_the_refused_item(engine, monkeypatch):
    real = engine.store.add

    def refuses_poison(modality, ids, embeddings, **kw):
        if any("poison" in (d or "") for d in kw.get("documents") or []):
            raise ValueError("metadatas[0]: the store refuses this one")
        return real(modality, ids, embeddings, **kw)

    monkeypatch.setattr(engine.store, "add", refuses_poison)
    texts = TEXTS[:5] + ["poison pill"] + TEXTS[5:8]
    report = engine.index(texts=texts, progress=False, batch_size=4)
    assert report.added == {"text": 8}
    (skip,) = report.skipped
    assert skip.source == "texts[5]" and skip.reason.startswith("refused by the store: metadatas")
    assert engine.store.count("text") == 8


def test_a_refusal_of_every_item_is_one_error(engine, monkeypatch):
    def refuses_all(*a, **kw):
        raise ValueError("store 'x' holds\ndimension 512")

    monkeypatch.setattr(engine.store, "add", refuses_all)
    with pytest.raises(ValueError, match="^store 'x' holds dimension 512$"):
        engine.index(texts=TEXTS[:3], progress=False)


def test_another_model_is_refused_before_anything_is_embedded(engine, monkeypatch):
    engine.index(texts=TEXTS[:2], progress=False)
    engine.store.update_manifest(model_id="some-other-model")
    calls = []
    monkeypatch.setattr(engine.encoder, "embed_texts", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match="built with model 'some-other-model'"):
        engine.index(texts=TEXTS[2:4], progress=False)
    assert not calls


def test_a_lost_race_is_not_counted_as_added(engine, store, tiny_encoder, monkeypatch):
    """Two indexers both see an id as new; Chroma keeps the first add: only it counts the item."""
    first = engine.index(texts=TEXTS[:6], progress=False)
    assert first.added == {"text": 6}
    late = RetrievalEngine(ChromaStore(store.client, store.name), tiny_encoder)
    monkeypatch.setattr(late.store, "existing_ids", lambda modality, ids: set())  # checked early
    second = late.index(texts=TEXTS[:8], progress=False)
    assert second.added == {"text": 2}
    assert second.already_indexed == {"text": 6}
    assert first.n_added + second.n_added == store.count("text") == 8


@pytest.mark.server
def test_concurrent_indexers_add_each_item_once(chroma_server, chroma_store_name, tiny_encoder):
    texts = [f"item {i} of a shared catalogue" for i in range(60)]
    reports: list[IndexReport] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def indexer() -> None:
        eng = RetrievalEngine(ChromaStore(chroma_server.client(), chroma_store_name), tiny_encoder)
        barrier.wait()
        try:
            reports.append(eng.index(texts=texts, progress=False, batch_size=5))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=indexer) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        assert sum(r.n_added for r in reports) == 60
        assert ChromaStore(chroma_server.client(), chroma_store_name).count("text") == 60
    finally:
        ChromaStore(chroma_server.client(), chroma_store_name).delete_store()


def test_reindex_reports_counts_then_the_real_skips(engine, sample_images, tmp_path):
    engine.index(texts=TEXTS, images=sample_images, progress=False)
    again = engine.index(
        texts=TEXTS + ["   "], images=[*sample_images, tmp_path / "gone.png"], progress=False
    )
    lines = again.summary().splitlines()
    assert lines[0] == f"added nothing; skipped {len(TEXTS) + len(sample_images) + 2}"
    assert lines[1] == f"  already indexed: {len(TEXTS) + len(sample_images)} (8 image, 12 text)"
    assert lines[2:] == [
        f"  skipped texts[{len(TEXTS)}] (text): empty text",
        f"  skipped {tmp_path / 'gone.png'} (image): file not found: '{tmp_path / 'gone.png'}'",
    ]
    assert again.skipped_by_reason()[ALREADY_INDEXED] == 20


def test_the_encoder_spec_is_recorded_on_the_first_write(engine):
    assert "encoder" not in engine.store.read_manifest()
    engine.index(texts=["   "], progress=False)  # nothing written: nothing recorded
    assert "encoder" not in engine.store.read_manifest()
    engine.index(texts=TEXTS[:1], progress=False)
    assert engine.store.read_manifest()["encoder"]["kind"] == "open_clip"


def test_image_sources_and_metadata_reach_the_store(engine, sample_images):
    report = engine.index(
        images=sample_images[:2],
        image_sources=["shop.jsonl:1", "shop.jsonl:2"],
        image_metadatas=[{"sku": "a", "price": np.float32(2.5)}, {"sku": "b", "note": None}],
        progress=False,
    )
    assert report.added == {"image": 2}
    got = engine.store.client.get_collection(engine.store.collection_name("image")).get(
        include=["metadatas", "uris"]
    )
    metas = {m["sku"]: m for m in got["metadatas"]}
    assert metas["a"]["source"] == "shop.jsonl:1" and metas["a"]["price"] == 2.5
    assert "note" not in metas["b"]  # null values are left out
    assert sorted(got["uris"]) == sorted(str(Path(p).resolve()) for p in sample_images[:2])


@pytest.mark.parametrize(
    ("meta", "ok"),
    [
        ({"a": 1, "b": "x", "c": True, "d": 1.5, "e": None}, True),
        ({"modality": "text"}, True),
        ({"source": "mine"}, True),
        ({"modality": "image"}, False),
        ({"mmgap_batch": "x"}, False),
        ({"": 1}, False),
        ({"chroma:document": "x"}, False),
        ({"#id": 1}, False),
        ({"$and": 1}, False),
        ({1: "x"}, False),
        ({"a": [1, 2]}, False),
        ({"a": {"b": 1}}, False),
        ({"a": float("nan")}, False),
        ({"a": float("-inf")}, False),
        ({"a": 2**63}, False),
        ({"a": -(2**63)}, True),
        ({"a": "\ud800"}, False),
        ({"\udfff": 1}, False),
        ({"a": b"bytes"}, False),
        ("not a dict", False),
    ],
)
def test_metadata_rules(meta, ok):
    if ok:
        out = check_metadata(meta, "text")
        assert None not in out.values()
    else:
        with pytest.raises(ValueError) as err:
            check_metadata(meta, "text")
        assert "\n" not in str(err.value) and str(err.value)


def test_report_summary_of_a_fresh_run():
    report = IndexReport(added={"text": 2}, skipped=[SkippedItem("a.txt", "text", "empty text")])
    assert report.summary().splitlines() == [
        "added 2 text; skipped 1",
        "  skipped a.txt (text): empty text",
    ]
    assert report.already_indexed == {}
