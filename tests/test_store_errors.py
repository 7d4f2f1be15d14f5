"""Store errors: only "collection does not exist" means absent; a dead server is one clear error."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

chromadb = pytest.importorskip("chromadb")

from mmgap_core.store import (  # noqa: E402
    ChromaStore,
    ForeignLayout,
    StoreUnavailableError,
    detect_layout,
    open_store,
)
from mmgap_core.store.chroma_client import collection_exists, find_collection  # noqa: E402

D = 8


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)


def test_errors_module_imports_neither_numpy_nor_chromadb():
    # Loaded as a file on its own: the module itself, not the packages above it (which load numpy).
    import mmgap_core.store.errors as errors_mod

    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('store_errors', {errors_mod.__file__!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        "assert str(mod.StoreUnavailableError('h', 1)).startswith('Chroma server at h:1 ')\n"
        "assert 'chromadb' not in sys.modules and 'numpy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_store_unavailable_error_is_one_line_and_pickles():
    err = StoreUnavailableError("db.example", 8123, "[Errno 111] Connection\nrefused")
    assert isinstance(err, ConnectionError)
    assert "\n" not in str(err) and "db.example:8123" in str(err)
    assert (err.host, err.port, err.reason) == (
        "db.example",
        8123,
        "[Errno 111] Connection refused",
    )
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is StoreUnavailableError and str(again) == str(err)


def test_not_found_is_absent_but_other_errors_propagate(tmp_path, monkeypatch):
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    store = ChromaStore(client, "probe", modalities=["text"])
    store.add("text", ["t0"], _vectors(1))
    assert find_collection(client, "probe-image") is None  # Chroma's NotFoundError: absent
    assert not collection_exists(client, "probe-image")
    assert not collection_exists(client, "x" * 600)  # a name Chroma never accepts: absent

    for exc in (ConnectionError("network is down"), RuntimeError("server fault")):

        def failing(*args, _exc=exc, **kwargs):
            raise _exc

        monkeypatch.setattr(client, "get_collection", failing)
        fresh = ChromaStore(client, "probe")  # the manifest comes from get_or_create_collection
        with pytest.raises(type(exc), match=str(exc)):
            fresh.count("text")  # was: an error here read as "no text collection", count 0
        with pytest.raises(type(exc), match=str(exc)):
            fresh.query("text", _vectors(1), 1)
        with pytest.raises(type(exc), match=str(exc)):
            collection_exists(client, "probe-image")
        with pytest.raises(type(exc), match=str(exc)):
            detect_layout(client, "probe")
        with pytest.raises(type(exc), match=str(exc)):
            ForeignLayout.mixed(client, "probe-text")
        monkeypatch.undo()
    client.close()


@pytest.mark.server
def test_server_stopped_mid_session_raises_store_unavailable(private_chroma_server):
    server = private_chroma_server
    where = f"{server.host}:{server.port}"
    store = ChromaStore.http(server.host, server.port, name="outage")
    store.add("text", [f"t{i}" for i in range(5)], _vectors(5), model_id="m")
    store.add("image", [f"i{i}" for i in range(3)], _vectors(3, 1), model_id="m")
    store.save_calibration({"v": 1})
    q = _vectors(2, 2)
    assert store.query_per_modality(q, 2)["text"].row_lengths() == [2, 2]
    mixed = ForeignLayout.mixed(server.client(), store.collection_name("text"))

    server.stop()

    calls = {
        "query": lambda: store.query("text", q, 2),
        "query_per_modality": lambda: store.query_per_modality(q, 2),
        "count": lambda: store.count("text"),
        "counts": lambda: store.counts(),
        "modalities": lambda: store.modalities(),
        "add": lambda: store.add("text", ["new"], _vectors(1, 3)),
        "read_manifest": lambda: store.read_manifest(),
        "update_manifest": lambda: store.update_manifest(note="x"),
        "save_calibration": lambda: store.save_calibration({"v": 2}),
        "load_calibration": lambda: store.load_calibration(),
        "model_id": lambda: store.model_id,
        "iter_embeddings": lambda: list(store.iter_embeddings("text")),
        "sample_documents": lambda: store.sample_documents("text", 2),
        "existing_ids": lambda: store.existing_ids("text", ["t0"]),
        "delete_store": lambda: store.delete_store(),
        "new handle": lambda: ChromaStore(store.client, "outage"),
        "http()": lambda: ChromaStore.http(server.host, server.port, name="outage"),
        "detect_layout": lambda: detect_layout(store.client, "outage"),
        "open_store": lambda: open_store(store.client, "outage"),
        "foreign query": lambda: mixed.query("text", q, 2),
    }
    for what, call in calls.items():
        with pytest.raises(StoreUnavailableError) as info:
            call()
        err = info.value
        message = str(err)
        assert "\n" not in message and where in message, (what, message)
        assert (err.host, err.port) == (server.host, server.port), what
        assert err.__cause__ is not None, what

    server.start()  # same path and port: the data and the calibration are back
    assert store.load_calibration() == {"v": 1}
    assert store.counts() == {"image": 3, "text": 5}
