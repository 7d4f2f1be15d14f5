"""RetrievalEngine end to end: a tiny open_clip model (random weights, loaded from a checkpoint
file) over a real Chroma store, embedded and on a `chroma run` server."""

from __future__ import annotations

import json
import threading
import warnings

import numpy as np
import pytest
from _fixtures_clip import SAMPLE_TEXTS

from mmgap_core.engine import NotCalibratedError, RetrievalEngine
from mmgap_core.fusion import DEFAULT_METHOD
from mmgap_core.results import content_id
from mmgap_core.store import ChromaStore

TEXTS = SAMPLE_TEXTS


@pytest.fixture
def indexed(engine, sample_images):
    report = engine.index(texts=TEXTS, images=sample_images, progress=False, batch_size=4)
    assert report.added == {"text": len(TEXTS), "image": len(sample_images)}
    return engine


def test_index_is_idempotent_with_content_ids(indexed, sample_images):
    again = indexed.index(texts=TEXTS, images=sample_images, progress=False)
    assert again.n_added == 0
    assert {s.reason for s in again.skipped} == {"already indexed"}
    assert indexed.store.counts() == {"text": len(TEXTS), "image": len(sample_images)}
    assert indexed.store.existing_ids("text", [content_id("text", TEXTS[0].encode())])


def test_bad_inputs_are_skipped_with_reasons_and_the_rest_indexed(
    engine, bad_images, sample_images
):
    images = list(bad_images.values()) + sample_images[:2]
    texts = ["   ", b"\xff\xfe not utf-8", "a fine text", "a fine text"]
    report = engine.index(texts=texts, images=images, progress=False)
    assert report.added == {"image": 2, "text": 1}
    reasons = {s.source: s.reason for s in report.skipped}
    assert reasons[str(bad_images["missing_file"])].startswith("file not found")
    for key in ("truncated_jpeg", "text_named_jpg", "decompression_bomb"):
        assert reasons[str(bad_images[key])], key
    assert (
        "bomb" in reasons[str(bad_images["decompression_bomb"])].lower()
        or "pixels" in reasons[str(bad_images["decompression_bomb"])]
    )
    assert reasons["texts[0]"] == "empty text"
    assert reasons["texts[1]"].startswith("not UTF-8")
    assert reasons["texts[3]"].startswith("duplicate of")
    assert engine.store.counts() == {"image": 2, "text": 1}


def test_interrupted_indexing_then_rerun_adds_only_what_is_missing(engine, sample_images):
    class Interrupt(Exception):
        pass

    real = engine.encoder.embed_texts
    calls = {"n": 0}

    def dies_on_third_batch(texts, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupt
        return real(texts, **kw)

    engine.encoder.embed_texts = dies_on_third_batch
    with pytest.raises(Interrupt):
        engine.index(texts=TEXTS, images=sample_images, progress=False, batch_size=3)
    assert engine.store.count("text") == 6  # two whole batches written, nothing half-written
    engine.encoder.embed_texts = real
    report = engine.index(texts=TEXTS, images=sample_images, progress=False, batch_size=3)
    assert report.added == {"text": 2, "image": len(sample_images)}
    assert engine.store.counts() == {"text": len(TEXTS), "image": len(sample_images)}


def test_search_before_calibration_says_what_to_run(indexed):
    with pytest.raises(NotCalibratedError, match="mmgap calibrate"):
        indexed.search("a cat")
    raw = indexed.search("a cat", method="raw", k=5)
    assert len(raw) == 5


def test_calibrated_search_merges_and_standardizes(indexed, sample_images):
    std = indexed.calibrate(progress=False)
    assert set(std.keys_) == {
        ("text", "text"),
        ("text", "image"),
        ("image", "text"),
        ("image", "image"),
    }
    res = indexed.search("a cat sleeping", k=len(TEXTS) + len(sample_images), method="standardize")
    assert {h.modality for h in res} == {"text", "image"}
    scores = [h.score for h in res]
    assert scores == sorted(scores, reverse=True)
    for h in res:
        mean, sd = std.params("text", h.modality)
        assert h.score == pytest.approx((h.raw_score - mean) / sd, abs=1e-5)
        assert h.id.startswith(h.modality + "-")
        if h.modality == "text":
            assert h.text in TEXTS and h.uri is None
        else:
            assert h.uri and h.uri.endswith((".png", ".jpg"))
        assert h.metadata["modality"] == h.modality
    # within a modality the order is the raw-cosine order
    for m in ("text", "image"):
        raw = [h.raw_score for h in res if h.modality == m]
        assert raw == sorted(raw, reverse=True)


def test_background_z_search_is_the_z_of_the_calibrated_scales(indexed, sample_images):
    indexed.calibrate(progress=False)
    record = indexed.calibration
    assert record.background is not None
    assert record.background.has("image", "text") and record.background.has("text", "image")
    n = len(TEXTS) + len(sample_images)
    assert indexed.search("a cat sleeping", k=n).method == "two-view-z" == DEFAULT_METHOD
    res = indexed.search("a cat sleeping", k=n, method="background-z")
    assert res.method == "background-z"
    raw = indexed.search("a cat sleeping", k=n, method="raw")
    for m in ("text", "image"):
        lists = np.array([[h.raw_score for h in raw if h.modality == m]])
        z = record.background.transform(lists, m, "text", n_items=lists.shape[1])[0]
        got = [h.score for h in res if h.modality == m]
        np.testing.assert_allclose(got, z, atol=1e-6)
    # the record (and its background scales) survives a reopen of the store
    again = RetrievalEngine(indexed.store, indexed.encoder)
    assert again.calibration.background.to_dict() == record.background.to_dict()


def test_image_query_and_other_methods(indexed, sample_images):
    indexed.calibrate(progress=False)
    res = indexed.search(image=sample_images[0], k=3, method="standardize")
    assert res.query_modality == "image"
    assert res[0].modality == "image" and res[0].raw_score == pytest.approx(1.0, abs=1e-4)
    for method in ("raw", "zscore-per-query", "minmax", "rrf", "center"):
        out = indexed.search("a cup of coffee", k=4, method=method)
        assert len(out) == 4 and out.method == method
    with pytest.raises(ValueError, match="unknown fusion method"):
        indexed.search("coffee", method="best")


def test_query_errors(indexed, tmp_path):
    indexed.calibrate(progress=False)
    with pytest.raises(ValueError, match="empty query"):
        indexed.search("   ")
    with pytest.raises(ValueError, match="not found"):
        indexed.search(image=tmp_path / "nope.png")
    with pytest.raises(ValueError, match="exactly one"):
        indexed.search()
    with pytest.raises(ValueError, match="dimension"):
        indexed.search(embedding=np.ones(7))


def test_calibration_persists_and_rejects_another_model(indexed, store, tiny_clip, tmp_path):
    from _fixtures_clip import make_tiny_checkpoint

    from mmgap_core.encoders.open_clip import OpenClipEncoder

    std = indexed.calibrate(progress=False)
    reopened = RetrievalEngine(ChromaStore(store.client, store.name), indexed.encoder)
    assert reopened.is_calibrated
    assert reopened.standardizer.to_dict() == std.to_dict()

    other_ckpt = make_tiny_checkpoint(tiny_clip.config_path, tmp_path / "other.pt", seed=1)
    other = OpenClipEncoder(
        tiny_clip.model_name, str(other_ckpt), model_config=str(tiny_clip.config_path), device="cpu"
    )
    with pytest.raises(ValueError, match="fitted for model"):
        RetrievalEngine(ChromaStore(store.client, store.name), other)


def test_export_import_calibration(indexed, tmp_path):
    indexed.calibrate(progress=False)
    path = indexed.export_calibration(tmp_path / "cal.json")
    data = json.loads(path.read_text())
    assert data["format"] == "mmgap.calibration" and data["corpus_sizes"]["text"] == len(TEXTS)
    before = indexed.search("a cat", k=5)
    indexed.import_calibration(path)
    after = indexed.search("a cat", k=5)
    assert [h.id for h in before] == [h.id for h in after]
    data["standardizer"]["model_id"] = "open_clip:someone-else"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="fitted for model"):
        indexed.import_calibration(bad)
    assert indexed.search("a cat", k=5)[0].id == before[0].id  # the stored calibration is untouched


def test_calibration_through_the_store_matches_exact_mining(indexed):
    exact = indexed.calibrate(progress=False)
    via_store = indexed.calibrate(progress=False, exact_max_items=0)
    assert indexed.calibration_data()["mining"] == "store nearest-neighbour"
    for key in exact.keys_:
        assert via_store.mean_[key] == pytest.approx(exact.mean_[key], abs=1e-4)


def test_calibrate_with_given_queries(indexed):
    std = indexed.calibrate(["a cat", "a rocket", "coffee", "mountains"], progress=False)
    assert std.query_modalities() == ["text"] and std.count_[("text", "image")] == 4


def test_growth_warning_and_auto_recalibration(engine, sample_images):
    engine.index(texts=TEXTS[:2], images=sample_images[:2], progress=False)
    engine.calibrate(progress=False)
    engine.count_check_seconds = 0
    engine.index(texts=TEXTS[2:], progress=False)
    with pytest.warns(UserWarning, match="grew"):
        res = engine.search("a cat", k=3)
    assert any("grew" in w for w in res.warnings)
    engine.auto_recalibrate = True
    res = engine.search("a cat", k=3)
    assert any("recalibrated" in w for w in res.warnings)
    assert engine.calibration_data()["corpus_sizes"]["text"] == len(TEXTS)


def test_online_calibration_updates_and_persists(indexed, store):
    indexed.calibrate(progress=False)
    n0 = indexed.standardizer.count_[("text", "image")]
    indexed.online_calibration = True
    indexed.persist_every = 2
    for q in ("a cat", "coffee", "rocket"):
        indexed.search(q, k=3)
    assert indexed.standardizer.count_[("text", "image")] == n0 + 3
    stored = RetrievalEngine(ChromaStore(store.client, store.name), indexed.encoder).standardizer
    assert stored.count_[("text", "image")] == n0 + 2  # persisted after every 2nd search


def test_empty_modality_and_empty_store(engine):
    with pytest.raises(ValueError, match="empty"):
        engine.search("a cat", method="raw")
    engine.index(texts=TEXTS, progress=False)
    with pytest.raises(ValueError, match="unknown query modality 'image'"):
        engine.calibrate(progress=False, query_modalities=["image"])
    res = engine.search("a cat", method="raw", k=3)
    assert [h.modality for h in res] == ["text"] * 3


def test_search_while_indexing_returns_consistent_results(indexed, sample_images):
    indexed.calibrate(progress=False)
    more = [f"extra text number {i} about cats and coffee" for i in range(60)]
    errors = []

    def writer():
        try:
            indexed.index(texts=more, progress=False, batch_size=5)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    seen = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the corpus grows under us: expected here
        while t.is_alive() or seen < 3:
            res = indexed.search("cats and coffee", k=10)
            seen += 1
            ids = [h.id for h in res]
            assert len(ids) == len(set(ids))
            assert [h.score for h in res] == sorted((h.score for h in res), reverse=True)
            for h in res:
                assert np.isfinite(h.score) and np.isfinite(h.raw_score)
                assert h.text if h.modality == "text" else h.uri
    t.join()
    assert not errors
    assert indexed.store.count("text") == len(TEXTS) + len(more)


@pytest.mark.server
def test_calibration_survives_a_server_restart(
    chroma_server, tiny_encoder, sample_images, chroma_store_name
):
    import chromadb

    client = chromadb.HttpClient(host=chroma_server.host, port=chroma_server.port)
    eng = RetrievalEngine(ChromaStore(client, chroma_store_name), tiny_encoder)
    eng.index(texts=TEXTS, images=sample_images, progress=False)
    std = eng.calibrate(progress=False)
    chroma_server.restart()
    client = chromadb.HttpClient(host=chroma_server.host, port=chroma_server.port)
    again = RetrievalEngine(ChromaStore(client, chroma_store_name), tiny_encoder)
    assert again.standardizer.to_dict() == std.to_dict()
    assert len(again.search("a cat", k=4)) == 4
    ChromaStore(client, chroma_store_name).delete_store()


def test_search_sees_the_engines_own_writes_despite_cached_counts(engine, sample_images):
    engine.count_check_seconds = 3600  # counts are cached, but our own writes must refresh them
    engine.index(texts=TEXTS[:3], progress=False)
    assert len(engine.search("a cat", method="raw", k=10)) == 3
    engine.index(texts=TEXTS[3:], images=sample_images[:2], progress=False)
    res = engine.search("a cat", method="raw", k=20)
    assert len(res) == len(TEXTS) + 2
    assert {h.modality for h in res} == {"text", "image"}


# ---------------------------------------------------------------- validation before model work
class _NoModelWork:
    """Fails the test if the query is embedded."""

    def __init__(self, encoder):
        self._encoder = encoder

    def __getattr__(self, name):
        if name.startswith("embed_query"):
            raise AssertionError(f"{name} called before the arguments were checked")
        return getattr(self._encoder, name)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"k": 0}, "k must be a positive integer"),
        ({"k": True}, "k must be a positive integer"),
        ({"k": 2.5}, "k must be a positive integer"),
        ({"k_per_modality": 0}, "k_per_modality must be a positive integer"),
        ({"method": "best"}, "unknown fusion method"),
        ({"method": "standardize-gold"}, "for `mmgap eval` only"),
    ],
)
def test_arguments_are_checked_before_the_query_is_embedded(indexed, kwargs, words):
    indexed.calibrate(progress=False)
    indexed.encoder = _NoModelWork(indexed.encoder)
    with pytest.raises(ValueError, match=words):
        indexed.search("a cat", **kwargs)


def test_not_calibrated_is_said_before_the_query_is_embedded(indexed):
    indexed.encoder = _NoModelWork(indexed.encoder)
    for method in ("standardize", "center"):
        with pytest.raises(NotCalibratedError, match="mmgap calibrate"):
            indexed.search("a cat", method=method)


def test_only_methods_that_need_embeddings_fetch_them(indexed, monkeypatch):
    indexed.calibrate(progress=False)
    seen = []
    real = indexed.store.query_per_modality

    def spy(*args, **kw):
        seen.append(kw.get("include_embeddings"))
        return real(*args, **kw)

    monkeypatch.setattr(indexed.store, "query_per_modality", spy)
    for method in ("raw", "standardize", "center", "rrf"):
        indexed.search("a cat", k=3, method=method)
    assert seen == [False, False, True, False]


def test_online_updates_follow_methods_that_use_the_statistics(indexed):
    indexed.calibrate(progress=False)
    indexed.online_calibration = True
    n0 = indexed.standardizer.count_[("text", "image")]
    indexed.search("a cat", k=3, method="raw")
    indexed.search("a cat", k=3, method="center")
    assert indexed.standardizer.count_[("text", "image")] == n0
    indexed.search("a cat", k=3, method="standardize")
    assert indexed.standardizer.count_[("text", "image")] == n0 + 1


# ---------------------------------------------------------------- calibration record
def test_a_modality_added_after_calibration_needs_a_recalibration(engine, sample_images, caplog):
    engine.index(texts=TEXTS, progress=False)
    with caplog.at_level("WARNING", logger="mmgap_core"):
        engine.calibrate(progress=False)
    assert "holds text items only" in caplog.text
    engine.index(images=sample_images, progress=False)
    with pytest.raises(NotCalibratedError, match=r"no statistics for \['image'\].*mmgap calibrate"):
        engine.search("a cat", k=3)
    assert len(engine.search("a cat", k=3, method="raw")) == 3
    engine.auto_recalibrate = True
    res = engine.search("a cat", k=len(TEXTS) + len(sample_images))
    assert any("recalibrated" in w for w in res.warnings)
    assert {h.modality for h in res} == {"text", "image"}
    assert engine.calibration.corpus_sizes == {"text": len(TEXTS), "image": len(sample_images)}


def test_the_record_is_what_the_store_keeps(indexed, store):
    indexed.calibrate(progress=False)
    record = indexed.calibration
    assert record.provenance.mining == "exact" and record.provenance.model_id == indexed.model_id
    assert indexed.calibration_data() == record.to_dict() == store.load_calibration()
    assert set(record.center_means) == {"text", "image"}


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d.update(corpus_sizes="garbage"), "corpus_sizes must be an object"),
        (lambda d: d.pop("standardizer"), "'standardizer' is missing"),
        (
            lambda d: d["standardizer"].update(model_id=None, dim=None),
            "fitted for model null but the record is for model",
        ),
    ],
)
def test_a_broken_import_stores_nothing(indexed, tmp_path, mutate, words):
    from mmgap_core.calibration import CalibrationFormatError

    indexed.calibrate(progress=False)
    before = indexed.calibration_data()
    data = json.loads(indexed.export_calibration(tmp_path / "cal.json").read_text())
    mutate(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(CalibrationFormatError, match=words):
        indexed.import_calibration(bad)
    assert indexed.calibration_data() == before == indexed.store.load_calibration()
    assert len(indexed.search("a cat", k=3)) == 3


def test_a_file_for_another_model_is_refused(indexed, tmp_path):
    indexed.calibrate(progress=False)
    data = json.loads(indexed.export_calibration(tmp_path / "cal.json").read_text())
    data["model_id"] = data["standardizer"]["model_id"] = "open_clip:someone-else"
    data["background_scale"]["model_id"] = "open_clip:someone-else"
    data["centered_background_scale"]["model_id"] = "open_clip:someone-else"
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="fitted for model 'open_clip:someone-else'"):
        indexed.import_calibration(bad)


def test_query_errors_come_before_calibration_errors(indexed, tmp_path):
    indexed.encoder = _NoModelWork(indexed.encoder)
    with pytest.raises(ValueError, match="query image not found"):
        indexed.search(image=tmp_path / "nope.png")
    with pytest.raises(ValueError, match="empty query"):
        indexed.search("  ")
