"""ChromaStore (mmgap layout) and the foreign-layout readers, on a local and a served Chroma."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

chromadb = pytest.importorskip("chromadb")

from mmgap_core.store import (  # noqa: E402
    AddResult,
    ChromaStore,
    ForeignLayout,
    ModalityHits,
    VectorStore,
    detect_layout,
    open_store,
)
from mmgap_core.store.chroma_foreign import IMAGE_BASE64_REGEX  # noqa: E402
from mmgap_core.store.chroma_manifest import MAX_MANIFEST_VALUE_BYTES  # noqa: E402

D = 16


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _expected(q: np.ndarray, e: np.ndarray, ids: list[str], k: int):
    """Numpy reference: top-k ids and cosine scores."""
    sims = _unit(q) @ _unit(e).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in order], np.take_along_axis(sims, order, axis=1)


def _assert_hits_match(hits: ModalityHits, q, e, ids, k):
    exp_ids, exp_scores = _expected(q, e, ids, k)
    n = min(k, len(ids))
    assert hits.scores.shape == (len(q), k)
    assert hits.scores.dtype == np.float32
    for qi in range(len(q)):
        assert hits.ids[qi] == exp_ids[qi]
        np.testing.assert_allclose(hits.scores[qi, :n], exp_scores[qi], atol=1e-4)
        assert np.all(np.isneginf(hits.scores[qi, n:]))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def store(chroma_client, chroma_store_name):
    return ChromaStore(chroma_client, chroma_store_name)


def _fill(store: ChromaStore, rng, n_text=40, n_image=25, model_id="clip-test"):
    te = rng.normal(size=(n_text, D)).astype(np.float32)
    ie = rng.normal(size=(n_image, D)).astype(np.float32)
    tids = [f"t{i}" for i in range(n_text)]
    iids = [f"i{i}" for i in range(n_image)]
    store.add(
        "text",
        tids,
        te,
        documents=[f"caption {i}" for i in range(n_text)],
        metadatas=[{"lang": "en" if i % 2 else "de", "n": i} for i in range(n_text)],
        model_id=model_id,
    )
    store.add(
        "image",
        iids,
        ie,
        uris=[f"file:///img/{i}.png" for i in range(n_image)],
        metadatas=[{"lang": "en" if i % 3 else "de"} for i in range(n_image)],
        model_id=model_id,
    )
    return tids, te, iids, ie


# ------------------------------------------------------------------------------------------------
# mmgap layout
# ------------------------------------------------------------------------------------------------


def test_round_trip_scores_are_numpy_cosine(store, rng):
    tids, te, iids, ie = _fill(store, rng)
    assert isinstance(store, VectorStore)
    assert store.modalities() == ["image", "text"]
    assert store.counts() == {"image": 25, "text": 40}
    assert store.dim == D and store.model_id == "clip-test"
    q = rng.normal(size=(4, D)).astype(np.float32)

    th = store.query("text", q, 7, include_embeddings=True)
    _assert_hits_match(th, q, te, tids, 7)
    assert th.modality == "text"
    pos = {t: i for i, t in enumerate(tids)}
    assert th.documents[0] == [f"caption {pos[t]}" for t in th.ids[0]]
    assert all(u is None for u in th.uris[0])
    assert all(
        m["modality"] == "text" and m["n"] == pos[t] for t, m in zip(th.ids[0], th.metadatas[0])
    )
    assert th.embeddings.shape == (4, 7, D) and th.embeddings.dtype == np.float32
    np.testing.assert_allclose(th.embeddings[1], te[[pos[t] for t in th.ids[1]]], rtol=1e-6)

    # k larger than the modality: short rows, -inf / zero padding
    ih = store.query("image", q, 30, include_embeddings=True)
    _assert_hits_match(ih, q, ie, iids, 30)
    assert ih.row_lengths() == [25] * 4
    assert ih.uris[0][0].startswith("file:///img/") and ih.documents[0][0] is None
    assert np.all(ih.embeddings[:, 25:] == 0)

    # a single vector is one query row; no rows, no hits
    one = store.query("text", q[0], 3)
    assert one.ids == [th.ids[0][:3]] and one.embeddings is None
    none = store.query("text", np.zeros((0, D), dtype=np.float32), 3, include_embeddings=True)
    assert none.ids == [] and none.scores.shape == (0, 3) and none.embeddings.shape == (0, 3, D)


def test_idempotent_re_add(store, rng):
    e = rng.normal(size=(10, D)).astype(np.float32)
    ids = [f"x{i}" for i in range(10)]
    first = store.add("text", ids, e, documents=[str(i) for i in range(10)])
    assert first == AddResult(added=ids, skipped={})
    again = store.add("text", ids[5:] + ["x10"], rng.normal(size=(6, D)), documents=["new"] * 6)
    assert again.added == ["x10"]
    assert again.skipped == {i: "already indexed" for i in ids[5:]}
    assert store.count("text") == 11
    assert store.existing_ids("text", ["x0", "x9", "nope"]) == {"x0", "x9"}
    # skipped items were not overwritten
    got = store.client.get_collection(store.collection_name("text"), embedding_function=None).get(
        ids=["x7"], include=["documents", "embeddings"]
    )
    assert got["documents"] == ["7"]
    np.testing.assert_allclose(got["embeddings"][0], e[7], rtol=1e-6)


def test_bad_batch_is_rejected_whole_and_writes_nothing(store, rng):
    store.add("text", ["a0", "a1"], rng.normal(size=(2, D)), model_id="clip-A")
    ok = rng.normal(size=(3, D)).astype(np.float32)
    nan = ok.copy()
    nan[2, 4] = np.nan
    inf = ok.copy()
    inf[1, 0] = np.inf
    ids = ["b0", "b1", "b2"]
    cases = [
        (dict(ids=ids, embeddings=ok[:2]), "3 ids but 2 embeddings"),
        (dict(ids=ids, embeddings=ok, documents=["x"]), "3 ids but 1 documents"),
        (dict(ids=ids, embeddings=ok, uris=["u"] * 4), "3 ids but 4 uris"),
        (dict(ids=ids, embeddings=ok, metadatas=[{}]), "3 ids but 1 metadatas"),
        (dict(ids=ids, embeddings=nan), "'b2' (row 2) contains NaN or inf"),
        (dict(ids=ids, embeddings=inf), "'b1' (row 1) contains NaN or inf"),
        (dict(ids=ids, embeddings=ok[:, :8]), "dimension 8 but store"),
        (dict(ids=ids, embeddings=ok, model_id="clip-B"), "built with model 'clip-A'"),
        (dict(ids=["b0", "b0", "b2"], embeddings=ok), "duplicate id 'b0'"),
        (dict(ids=["b0", "", "b2"], embeddings=ok), "ids[1]"),
        (dict(ids=ids, embeddings=ok, documents=["x", 3, "y"]), "documents[1]"),
        (dict(ids=ids, embeddings=ok, metadatas=[{}, {}, {"bad": {"nested": 1}}]), "metadatas[2]"),
        (dict(ids=ids, embeddings=ok, metadatas=[{"modality": "image"}, {}, {}]), "metadatas[0]"),
    ]
    for kwargs, fragment in cases:
        with pytest.raises(ValueError) as err:
            store.add("text", **kwargs)
        assert fragment in str(err.value), (fragment, str(err.value))
        assert store.count("text") == 2
        assert store.existing_ids("text", ids) == set()
    # the bad batches also left the manifest alone
    assert store.read_manifest()["model_id"] == "clip-A" and store.dim == D
    # a good batch from the same model still goes in
    assert store.add("text", ids, ok, model_id="clip-A").added == ids


def test_model_and_dim_mismatch_messages(store, rng):
    store.add("image", ["i0"], rng.normal(size=(1, D)), model_id="ViT-B-32/openai")
    with pytest.raises(ValueError, match=r"built with model 'ViT-B-32/openai'.*'ViT-L-14'"):
        store.add("text", ["t0"], rng.normal(size=(1, D)), model_id="ViT-L-14")
    with pytest.raises(ValueError, match=f"dimension 5 but store .* holds dimension {D}"):
        store.add("text", ["t0"], rng.normal(size=(1, 5)))
    with pytest.raises(ValueError, match=f"dimension mismatch, expected {D} columns, got 5"):
        store.query("image", rng.normal(size=(2, 5)), 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        store.query("image", np.full((1, D), np.nan), 1)
    # no model_id given: accepted (unknown), nothing recorded over the existing one
    store.add("text", ["t0"], rng.normal(size=(1, D)))
    assert store.model_id == "ViT-B-32/openai"


def test_manifest_read_merge_write_keeps_other_keys(store, rng):
    store.add("text", ["t0"], rng.normal(size=(1, D)), model_id="m")
    store.update_manifest(note="hello", params={"a": [1, 2.5, None]})
    store.update_manifest(extra=3)
    man = store.read_manifest()
    assert man["note"] == "hello" and man["params"] == {"a": [1, 2.5, None]} and man["extra"] == 3
    assert man["model_id"] == "m" and man["dim"] == D and man["modalities"] == ["text"]
    # each value is its own record in the manifest collection, its JSON text as the document
    raw = store.client.get_collection(store.manifest_name, embedding_function=None).get(
        ids=["field:params"], include=["documents", "metadatas"]
    )
    assert raw["documents"] == [json.dumps({"a": [1, 2.5, None]}, separators=(",", ":"))]
    assert raw["metadatas"] == [{"kind": "field", "key": "params"}]
    store.update_manifest(note=None)
    assert "note" not in store.read_manifest() and store.read_manifest()["extra"] == 3
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        store.update_manifest(bad=object())
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        store.update_manifest(bad=float("nan"))


def _calibration(rng) -> dict:
    # about 20 KB: per-pair stats plus mean vectors, like the core writes
    return {
        "version": 1,
        "pairs": {
            f"{a}->{b}": {"mu": float(rng.normal()), "sigma": float(rng.uniform(0.01, 0.1))}
            for a in ("text", "image")
            for b in ("text", "image")
        },
        "means": {m: rng.normal(size=512).tolist() for m in ("text", "image")},
    }


def test_calibration_round_trip_and_size_limit(store, rng):
    assert store.load_calibration() is None
    cal = _calibration(rng)
    assert len(json.dumps(cal)) > 15_000
    store.save_calibration(cal)
    assert store.load_calibration() == cal
    store.update_manifest(other="kept")
    assert store.load_calibration() == cal
    huge = {"blob": "x" * (MAX_MANIFEST_VALUE_BYTES + 1)}
    with pytest.raises(ValueError, match=r"'calibration' is \d+ bytes as JSON"):
        store.save_calibration(huge)
    assert store.load_calibration() == cal
    with pytest.raises(ValueError, match="must be a dict"):
        store.save_calibration([1, 2])


def test_calibration_survives_a_new_persistent_client(tmp_path, rng):
    path = tmp_path / "db"
    client = chromadb.PersistentClient(path=str(path))
    store = ChromaStore(client, "persist")
    _fill(store, rng, 12, 6)
    cal = _calibration(rng)
    store.save_calibration(cal)
    client.close()

    fresh = ChromaStore.persistent(path, name="persist")
    assert fresh.load_calibration() == cal
    assert fresh.counts() == {"image": 6, "text": 12}
    assert fresh.model_id == "clip-test" and fresh.dim == D
    fresh.client.close()


@pytest.mark.server
def test_calibration_and_data_survive_server_restart(chroma_server, chroma_store_name, rng):
    store = ChromaStore.http(chroma_server.host, chroma_server.port, name=chroma_store_name)
    tids, te, _, _ = _fill(store, rng, 15, 5)
    cal = _calibration(rng)
    store.save_calibration(cal)
    q = rng.normal(size=(2, D)).astype(np.float32)
    before = store.query("text", q, 4)

    chroma_server.restart()

    again = ChromaStore.http(chroma_server.host, chroma_server.port, name=chroma_store_name)
    assert again.load_calibration() == cal
    assert again.counts() == {"image": 5, "text": 15}
    after = again.query("text", q, 4)
    assert after.ids == before.ids
    np.testing.assert_allclose(after.scores, before.scores, atol=1e-6)
    _assert_hits_match(after, q, te, tids, 4)
    again.delete_store()


def test_query_per_modality_runs_concurrently(store, rng, monkeypatch):
    tids, te, iids, ie = _fill(store, rng)
    q = rng.normal(size=(3, D)).astype(np.float32)
    sequential = {m: store.query(m, q, 5) for m in ("text", "image")}

    # Each per-modality query waits until the other one is in flight: only concurrency passes.
    barrier = threading.Barrier(2, timeout=10)
    threads: set[str] = set()
    collection_cls = chromadb.api.models.Collection.Collection
    original = collection_cls.query

    def gated(self, *args, **kwargs):
        threads.add(threading.current_thread().name)
        barrier.wait()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(collection_cls, "query", gated)
    both = store.query_per_modality(q, 5)
    assert len(threads) == 2
    monkeypatch.setattr(collection_cls, "query", original)

    assert set(both) == {"text", "image"}
    for m in both:
        assert both[m].ids == sequential[m].ids
        np.testing.assert_allclose(both[m].scores, sequential[m].scores)
    per = store.query_per_modality(q, {"text": 2, "image": 4}, include_embeddings=True)
    assert per["text"].scores.shape == (3, 2) and per["image"].embeddings.shape == (3, 4, D)
    _assert_hits_match(per["image"], q, ie, iids, 4)
    only = store.query_per_modality(q, 3, modalities=["image"])
    assert list(only) == ["image"]
    with pytest.raises(ValueError, match=r"no k for modalities \['image'\]"):
        store.query_per_modality(q, {"text": 2}, modalities=["text", "image"])
    with pytest.raises(ValueError, match=r"unknown modalities \['audio'\]"):
        store.query_per_modality(q, 3, modalities=["audio"])


def test_empty_and_unknown_modality(chroma_client, chroma_store_name, rng):
    store = ChromaStore(chroma_client, chroma_store_name, modalities=["text", "image"])
    assert store.modalities() == ["image", "text"]
    assert store.counts() == {"image": 0, "text": 0}
    q = rng.normal(size=(2, D))
    empty = store.query("image", q, 5)
    assert empty.ids == [[], []] and empty.scores.shape == (2, 5)
    assert np.all(np.isneginf(empty.scores))
    store.add("text", ["t0", "t1"], rng.normal(size=(2, D)))
    res = store.query_per_modality(q, 3, include_embeddings=True)
    assert res["image"].row_lengths() == [0, 0] and res["text"].row_lengths() == [2, 2]
    assert res["image"].embeddings.shape == (2, 3, D)
    with pytest.raises(
        ValueError, match=r"unknown modality 'audio'; this store has \['image', 'text'\]"
    ):
        store.query("audio", q, 3)
    with pytest.raises(ValueError, match="unknown modality"):
        store.count("audio")
    for bad in (-1, 0, True, 2.0, "3"):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            store.query("text", q, bad)
        with pytest.raises(ValueError, match="k_per_modality must be a positive integer"):
            store.query_per_modality(q, bad)
    with pytest.raises(ValueError, match=r"k_per_modality\['text'\] must be a positive integer"):
        store.query_per_modality(q, {"text": 0, "image": 2})
    # a second handle on the same store sees the modalities through manifest and collections
    assert ChromaStore(chroma_client, chroma_store_name).modalities() == ["image", "text"]


def test_where_filter(store, rng):
    tids, te, iids, ie = _fill(store, rng)
    q = rng.normal(size=(3, D)).astype(np.float32)
    hits = store.query("text", q, 50, where={"lang": "de"})
    keep = [i for i in range(len(tids)) if i % 2 == 0]
    _assert_hits_match(hits, q, te[keep], [tids[i] for i in keep], 50)
    assert all(m["lang"] == "de" for row in hits.metadatas for m in row)
    both = store.query_per_modality(q, 50, where={"$and": [{"lang": "en"}, {"modality": "image"}]})
    assert both["text"].row_lengths() == [0, 0, 0]
    assert all(m["lang"] == "en" for m in both["image"].metadatas[0])
    assert both["image"].row_lengths()[0] == sum(1 for i in range(len(iids)) if i % 3)


def test_iter_embeddings_and_sample(store, rng):
    tids, te, _, _ = _fill(store, rng, n_text=23, n_image=2)
    batches = list(store.iter_embeddings("text", batch_size=10))
    assert [len(b[0]) for b in batches] == [10, 10, 3]
    got = {i: e for ids, embs in batches for i, e in zip(ids, embs)}
    assert set(got) == set(tids)
    for i, t in enumerate(tids):
        np.testing.assert_allclose(got[t], te[i], rtol=1e-6)
    assert all(e.dtype == np.float32 for _, e in batches)

    ids, docs, embs = store.sample_documents("text", 5, seed=7)
    assert len(set(ids)) == 5 and embs.shape == (5, D)
    assert store.sample_documents("text", 5, seed=7)[0] == ids
    pos = {t: i for i, t in enumerate(tids)}
    assert docs == [f"caption {pos[i]}" for i in ids]
    np.testing.assert_allclose(embs, te[[pos[i] for i in ids]], rtol=1e-6)
    all_ids, _, _ = store.sample_documents("image", 100, seed=0)
    assert sorted(all_ids) == ["i0", "i1"]


def test_writes_are_chunked_by_client_max_batch(chroma_client, chroma_store_name, rng, monkeypatch):
    sizes: list[int] = []
    original = chromadb.api.models.Collection.Collection.add

    def spy(self, ids, *args, **kwargs):
        sizes.append(len(ids))
        return original(self, ids, *args, **kwargs)

    monkeypatch.setattr(chromadb.api.models.Collection.Collection, "add", spy)
    monkeypatch.setattr(chroma_client, "get_max_batch_size", lambda: 7)
    store = ChromaStore(chroma_client, chroma_store_name)
    res = store.add("text", [f"c{i}" for i in range(30)], rng.normal(size=(30, D)))
    assert len(res.added) == 30 and store.count("text") == 30
    assert sizes == [7, 7, 7, 7, 2]


def test_names_are_validated():
    for bad in ["a b", "-store", "store-", "st..ore", "", "x/y", 3]:
        with pytest.raises(ValueError, match="invalid store name"):
            ChromaStore(None, bad)
    for bad in ["te xt", "text-", "_text", "a..b", ""]:
        with pytest.raises(ValueError, match=f"invalid modality label {bad!r}"):
            ChromaStore(None, "okname", modalities=[bad])
    with pytest.raises(ValueError, match="reserved"):
        ChromaStore(None, "okname", modalities=["mmgap"])
    with pytest.raises(ValueError, match="longer than 512"):
        ChromaStore(None, "s" * 400, modalities=["m" * 200])


def test_own_layout_does_not_depend_on_foreign_layouts():
    code = (
        "import sys, mmgap_core.store.chroma_store as s; s.ChromaStore\n"
        "bad = [m for m in sys.modules if m.endswith(('chroma_foreign', 'chroma_detect'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not any(name.startswith("from_") for name in dir(ChromaStore))


def test_store_module_does_not_import_chromadb():
    import mmgap_core.store as store_pkg

    code = "import sys, mmgap_core.store as s; s.ModalityHits; assert 'chromadb' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert store_pkg.ChromaStore is ChromaStore  # the lazy attribute resolves to the backend
    with pytest.raises(AttributeError):
        store_pkg.NoSuchThing  # noqa: B018


# ------------------------------------------------------------------------------------------------
# Foreign layouts
# ------------------------------------------------------------------------------------------------


def _image_bytes(fmt: str, seed: int) -> bytes:
    from PIL import Image

    color = tuple(int(c) for c in np.random.default_rng(seed).integers(0, 255, 3))
    buf = io.BytesIO()
    Image.new("RGB", (6, 5), color).save(buf, fmt)
    return buf.getvalue()


def test_image_base64_regex_formats():
    # The pattern LangChain image documents are selected by, server-side and in detect_layout.
    image_b64 = re.compile(IMAGE_BASE64_REGEX)
    for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP"):
        b64 = base64.b64encode(_image_bytes(fmt, 0)).decode()
        assert image_b64.match(b64), fmt
        assert image_b64.match(b64[: len(b64) // 4 * 4]), fmt  # any length of real base64
    for text in [
        "a photo of a cat",
        "Qk3 looks like bmp but has spaces",
        "/9j/ not base64 either",
        base64.b64encode(b"just some bytes here").decode(),
        base64.b64encode(b"RIFF\x00\x00\x00\x00WAVEfmt ").decode(),  # RIFF but not WEBP
        "",
    ]:
        assert not image_b64.match(text), text
    assert IMAGE_BASE64_REGEX.startswith("^")


def _mk_collection(client, name, space=None):
    kw = {"configuration": {"hnsw": {"space": space}}} if space else {}
    return client.get_or_create_collection(name, embedding_function=None, **kw)


def test_mixed_collection_tagged_and_inferred(chroma_client, chroma_store_name, rng):
    col = _mk_collection(chroma_client, f"{chroma_store_name}-mixed", space="cosine")
    n = 30
    emb = rng.normal(size=(n, D)).astype(np.float32)
    ids = [f"m{i}" for i in range(n)]
    modality, metas, uris, docs = [], [], [], []
    for i in range(n):
        kind = i % 5
        if kind in (0, 1):  # tagged text
            modality.append("text")
            metas.append({"modality": "text", "grp": i % 2})
            uris.append(None)
            docs.append(f"text {i}")
        elif kind == 2:  # tagged image
            modality.append("image")
            metas.append({"modality": "image", "grp": i % 2})
            uris.append(f"/img/{i}.jpg")
            docs.append(None)
        elif kind == 3:  # untagged, has uri -> image
            modality.append("image")
            metas.append({"grp": i % 2})
            uris.append(f"/img/{i}.jpg")
            docs.append(None)
        else:  # untagged, no uri -> text
            modality.append("text")
            metas.append({"grp": i % 2})
            uris.append(None)
            docs.append(f"text {i}")
    col.add(ids=ids, embeddings=emb, metadatas=metas, uris=uris, documents=docs)

    assert detect_layout(chroma_client, col.name) == "mixed"
    view = ForeignLayout.mixed(chroma_client, col.name)
    assert isinstance(view, ForeignLayout) and isinstance(view, VectorStore)
    assert view.layout == "mixed" and view.read_only and view.dim == D
    assert view.modalities() == ["image", "text"]
    assert view.counts() == {"image": modality.count("image"), "text": modality.count("text")}
    q = rng.normal(size=(3, D)).astype(np.float32)
    res = view.query_per_modality(q, 5, include_embeddings=True)
    for m in ("image", "text"):
        sel = [i for i in range(n) if modality[i] == m]
        _assert_hits_match(res[m], q, emb[sel], [ids[i] for i in sel], 5)
        np.testing.assert_allclose(
            res[m].embeddings[0, 0], emb[ids.index(res[m].ids[0][0])], rtol=1e-6
        )
    assert all(u and u.startswith("/img/") for u in res["image"].uris[0])
    assert all(d and d.startswith("text ") for d in res["text"].documents[0])
    # user where is combined with the modality filter, for tagged and untagged items
    grp = view.query("text", q, 50, where={"grp": 1})
    sel = [i for i in range(n) if modality[i] == "text" and i % 2 == 1]
    _assert_hits_match(grp, q, emb[sel], [ids[i] for i in sel], 50)
    got = {i for ids_, _ in view.iter_embeddings("image", batch_size=4) for i in ids_}
    assert got == {ids[i] for i in range(n) if modality[i] == "image"}
    with pytest.raises(TypeError, match="read-only"):
        view.add("text", ["x"], emb[:1])
    assert view.model_id is None and view.load_calibration() is None


def test_langchain_add_images_layout(chroma_client, chroma_store_name, rng):
    # Shape written by langchain_chroma.Chroma: get_or_create_collection(embedding_function=None)
    # with default (l2) space; add_images upserts base64 file bytes as documents, metadatas only
    # for items that have one; add_texts upserts plain text documents.
    col = chroma_client.get_or_create_collection(
        f"{chroma_store_name}-lc", embedding_function=None, metadata=None, configuration=None
    )
    fmts = ["PNG", "JPEG", "GIF", "WEBP", "BMP", "PNG"]
    img_b64 = [base64.b64encode(_image_bytes(f, i)).decode() for i, f in enumerate(fmts)]
    img_emb = _unit(rng.normal(size=(len(fmts), D))).astype(np.float32)
    img_ids = [f"img-{i}" for i in range(len(fmts))]
    col.upsert(
        ids=img_ids[:3],
        embeddings=img_emb[:3],
        documents=img_b64[:3],
        metadatas=[{"source": f"/photos/{i}.{f.lower()}"} for i, f in enumerate(fmts[:3])],
    )
    col.upsert(ids=img_ids[3:], embeddings=img_emb[3:], documents=img_b64[3:])
    texts = [
        "a red square",
        "Qk3 tricky text",
        base64.b64encode(b"hello bytes").decode(),
        "/9j/ nope",
    ]
    txt_emb = _unit(rng.normal(size=(len(texts), D))).astype(np.float32)
    txt_ids = [f"txt-{i}" for i in range(len(texts))]
    col.upsert(
        ids=txt_ids[:2], embeddings=txt_emb[:2], documents=texts[:2], metadatas=[{"k": 1}, {"k": 2}]
    )
    col.upsert(ids=txt_ids[2:], embeddings=txt_emb[2:], documents=texts[2:])

    assert detect_layout(chroma_client, col.name) == "langchain-images"
    view = open_store(chroma_client, col.name)
    assert isinstance(view, ForeignLayout) and view.layout == "langchain-images"
    assert view.modalities() == ["image", "text"]
    assert view.counts() == {"image": 6, "text": 4}
    q = rng.normal(size=(2, D)).astype(np.float32)
    res = view.query_per_modality(q, 4)
    _assert_hits_match(res["image"], q, img_emb, img_ids, 4)
    _assert_hits_match(res["text"], q, txt_emb, txt_ids, 4)
    for hid, doc, uri in zip(res["image"].ids[0], res["image"].documents[0], res["image"].uris[0]):
        i = img_ids.index(hid)
        assert doc == img_b64[i]  # LangChain's page_content
        assert uri == (f"/photos/{i}.{fmts[i].lower()}" if i < 3 else None)
    assert sorted(res["text"].documents[0]) == sorted(texts)
    assert res["text"].metadatas[0][res["text"].ids[0].index("txt-0")] == {"k": 1}
    assert {i for ids_, _ in view.iter_embeddings("text") for i in ids_} == set(txt_ids)


class _LlamaHandBuilt:
    """LlamaIndex ChromaVectorStore.add shape, written with raw chroma calls."""

    @staticmethod
    def node_meta(node_id: str, node_type: str, text_field: dict, extra: dict) -> dict:
        node = {
            "id_": node_id,
            "embedding": None,
            "metadata": dict(extra),
            "excluded_embed_metadata_keys": [],
            "excluded_llm_metadata_keys": [],
            "relationships": {},
            "metadata_template": "{key}: {value}",
            "metadata_separator": "\n",
            "text": "",
            "mimetype": "text/plain",
            "start_char_idx": None,
            "end_char_idx": None,
            "text_template": "{metadata_str}\n\n{content}",
            **text_field,
            "class_name": node_type,
        }
        return {
            **extra,
            "_node_content": json.dumps(node, ensure_ascii=False),
            "_node_type": node_type,
            "document_id": "None",
            "doc_id": "None",
            "ref_doc_id": "None",
        }


def test_llamaindex_layout_hand_built(chroma_client, chroma_store_name, rng):
    tcol = _mk_collection(chroma_client, f"{chroma_store_name}-li-text")
    icol = _mk_collection(chroma_client, f"{chroma_store_name}-li-img")
    t_emb = _unit(rng.normal(size=(5, D))).astype(np.float32)
    i_emb = _unit(rng.normal(size=(4, D))).astype(np.float32)
    t_ids = [f"tn{i}" for i in range(5)]
    i_ids = [f"in{i}" for i in range(4)]
    tcol.add(
        ids=t_ids,
        embeddings=t_emb,
        documents=[f"node text {i}" for i in range(5)],
        metadatas=[
            _LlamaHandBuilt.node_meta(t, "TextNode", {}, {"page": i}) for i, t in enumerate(t_ids)
        ],
    )
    img_fields = [
        (
            {
                "image": None,
                "image_path": f"/data/{i}.png",
                "image_url": None,
                "image_mimetype": "image/png",
                "text_embedding": None,
            },
            {"file_path": f"/data/{i}.png"},
        )
        for i in range(3)
    ] + [
        (
            {
                "image": None,
                "image_path": None,
                "image_url": "https://example.invalid/x.png",
                "image_mimetype": None,
                "text_embedding": None,
            },
            {},
        )
    ]
    icol.add(
        ids=i_ids,
        embeddings=i_emb,
        documents=[""] * 4,
        metadatas=[
            _LlamaHandBuilt.node_meta(n, "ImageNode", f, x) for n, (f, x) in zip(i_ids, img_fields)
        ],
    )
    assert detect_layout(chroma_client, tcol.name) == "llamaindex"
    assert detect_layout(chroma_client, icol.name) == "llamaindex"
    view = ForeignLayout.llamaindex(chroma_client, tcol.name, icol.name)
    assert view.modalities() == ["image", "text"] and view.counts() == {"image": 4, "text": 5}
    q = rng.normal(size=(2, D)).astype(np.float32)
    res = view.query_per_modality(q, {"text": 3, "image": 4})
    _assert_hits_match(res["text"], q, t_emb, t_ids, 3)
    _assert_hits_match(res["image"], q, i_emb, i_ids, 4)
    for hid, doc in zip(res["text"].ids[0], res["text"].documents[0]):
        assert doc == f"node text {t_ids.index(hid)}"
    expect_uri = {f"in{i}": f"/data/{i}.png" for i in range(3)} | {
        "in3": "https://example.invalid/x.png"
    }
    for hid, doc, uri, meta in zip(
        res["image"].ids[0],
        res["image"].documents[0],
        res["image"].uris[0],
        res["image"].metadatas[0],
    ):
        assert doc is None and uri == expect_uri[hid] and meta["_node_type"] == "ImageNode"
    single = open_store(chroma_client, icol.name)
    assert single.modalities() == ["image"]


def test_llamaindex_layout_written_by_llamaindex(chroma_client, chroma_store_name, rng):
    pytest.importorskip("llama_index.vector_stores.chroma")
    from llama_index.core import StorageContext
    from llama_index.core.embeddings import MockEmbedding, MultiModalEmbedding
    from llama_index.core.indices.multi_modal import MultiModalVectorStoreIndex
    from llama_index.core.schema import ImageNode, TextNode
    from llama_index.core.vector_stores.utils import metadata_dict_to_node
    from llama_index.vector_stores.chroma import ChromaVectorStore

    class NoImageModel(MultiModalEmbedding):
        """Embeddings are precomputed; any call to the model is a test failure."""

        def _get_query_embedding(self, query):
            raise AssertionError("image model called")

        async def _aget_query_embedding(self, query):
            raise AssertionError("image model called")

        def _get_text_embedding(self, text):
            raise AssertionError("image model called")

        def _get_image_embedding(self, img_file_path):
            raise AssertionError("image model called")

        async def _aget_image_embedding(self, img_file_path):
            raise AssertionError("image model called")

    tcol = _mk_collection(chroma_client, f"{chroma_store_name}-lt")
    icol = _mk_collection(chroma_client, f"{chroma_store_name}-limg")
    t_emb = _unit(rng.normal(size=(6, D))).astype(np.float32)
    i_emb = _unit(rng.normal(size=(5, D))).astype(np.float32)
    nodes = [
        TextNode(id_=f"t{i}", text=f"passage {i}", embedding=t_emb[i].tolist()) for i in range(6)
    ]
    nodes += [
        ImageNode(
            id_=f"i{i}",
            image_path=f"/pics/{i}.jpg",
            metadata={"file_path": f"/pics/{i}.jpg"},
            embedding=i_emb[i].tolist(),
        )
        for i in range(5)
    ]
    storage = StorageContext.from_defaults(
        vector_store=ChromaVectorStore(chroma_collection=tcol),
        image_store=ChromaVectorStore(chroma_collection=icol),
    )
    MultiModalVectorStoreIndex(
        nodes,
        storage_context=storage,
        embed_model=MockEmbedding(embed_dim=D),
        image_embed_model=NoImageModel(),
    )
    assert (tcol.count(), icol.count()) == (6, 5)

    view = ForeignLayout.llamaindex(chroma_client, tcol.name, icol.name)
    q = rng.normal(size=(3, D)).astype(np.float32)
    res = view.query_per_modality(q, 3)
    _assert_hits_match(res["text"], q, t_emb, [f"t{i}" for i in range(6)], 3)
    _assert_hits_match(res["image"], q, i_emb, [f"i{i}" for i in range(5)], 3)
    assert res["image"].uris[0] == [f"/pics/{h[1:]}.jpg" for h in res["image"].ids[0]]
    assert res["text"].documents[0] == [f"passage {h[1:]}" for h in res["text"].ids[0]]
    node = metadata_dict_to_node(res["image"].metadatas[0][0])
    assert isinstance(node, ImageNode) and node.node_id == res["image"].ids[0][0]


def test_detect_layout_and_open_store_for_mmgap(store, chroma_client, rng):
    _fill(store, rng, 5, 3)
    assert detect_layout(chroma_client, store.name) == "mmgap"
    assert detect_layout(chroma_client, store.collection_name("text")) == "mmgap"
    assert detect_layout(chroma_client, store.manifest_name) == "mmgap"
    for handle in (store.name, store.collection_name("image"), store.manifest_name):
        opened = open_store(chroma_client, handle)
        assert isinstance(opened, ChromaStore) and opened.name == store.name
        assert opened.counts() == {"image": 3, "text": 5}
    with pytest.raises(ValueError, match="not found"):
        detect_layout(chroma_client, f"{store.name}-missing")
