"""The ChromaStore manifest: a record per concern, no lost calibrations, first-layout migration."""

from __future__ import annotations

import json
import multiprocessing as mp

import numpy as np
import pytest

chromadb = pytest.importorskip("chromadb")

from mmgap_core.store import ChromaStore, ForeignLayout  # noqa: E402

D = 8
N_CALIBRATIONS = 120


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)


def _calibration(i: int) -> dict:
    """Calibration number ``i``: distinct values, and a checksum that proves it is whole."""
    rng = np.random.default_rng(i)
    means = rng.normal(size=64).round(6).tolist()
    return {"i": i, "means": means, "mu": float(i) / 7.0, "check": round(sum(means) + i, 6)}


def _is_whole(cal: object) -> bool:
    return (
        isinstance(cal, dict)
        and set(cal) == {"i", "means", "mu", "check"}
        and len(cal["means"]) == 64
        and abs(round(sum(cal["means"]) + cal["i"], 6) - cal["check"]) < 1e-6
    )


# -- worker processes (module level: spawned children import them) ------------------------------
def _calibrate_worker(host, port, name, n, ready, out) -> None:
    store = ChromaStore.http(host, port, name)
    ready.wait(60)
    lost = []
    for i in range(n):
        cal = _calibration(i)
        store.save_calibration(cal)
        if store.load_calibration() != cal:
            lost.append(i)
    out.put(("calibrate", lost))


def _index_worker(host, port, name, ready, stop, out) -> None:
    """What an ``index`` run writes: identity, encoder spec, items; reads the manifest back."""
    store = ChromaStore.http(host, port, name)
    writes, seen, broken = 0, [], 0
    while not stop.is_set():
        store.update_manifest(model_id="m", dim=D, encoder={"kind": "test", "run": writes})
        store.add("text", [f"x{writes}"], _vectors(1, writes), model_id="m")
        writes += 1
        ready.set()
        cal = store.read_manifest().get("calibration")
        if cal is not None:
            if _is_whole(cal):
                seen.append(cal["i"])
            else:
                broken += 1
    out.put(("index", writes, seen, broken))


@pytest.mark.server
def test_concurrent_index_writes_never_undo_a_calibration(chroma_server, chroma_store_name):
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    args = (chroma_server.host, chroma_server.port, chroma_store_name)
    ChromaStore.http(*args)  # create the store once, before both writers
    indexer = ctx.Process(target=_index_worker, args=(*args, ready, stop, out))
    calibrator = ctx.Process(target=_calibrate_worker, args=(*args, N_CALIBRATIONS, ready, out))
    indexer.start()
    calibrator.start()
    try:
        first = out.get(timeout=600)
        stop.set()
        second = out.get(timeout=120)
    finally:
        stop.set()
        for proc in (indexer, calibrator):
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    results = {r[0]: r[1:] for r in (first, second)}
    (lost,) = results["calibrate"]
    writes, seen, broken = results["index"]
    assert lost == [], f"{len(lost)} of {N_CALIBRATIONS} calibrations were undone"
    assert broken == 0, "a manifest read saw an incomplete calibration"
    assert writes >= 10, f"only {writes} index-style writes overlapped the calibrations"
    assert seen == sorted(seen), "a calibration went backwards (an older one was rewritten)"

    store = ChromaStore.http(*args)
    assert store.load_calibration() == _calibration(N_CALIBRATIONS - 1)
    manifest = store.read_manifest()
    assert manifest["model_id"] == "m" and manifest["dim"] == D
    assert manifest["encoder"]["kind"] == "test" and manifest["modalities"] == ["text"]
    store.delete_store()


def test_each_key_is_its_own_record(tmp_path):
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    a = ChromaStore(client, "rec")
    b = ChromaStore(client, "rec")  # a second handle: the manifest is read fresh, not cached
    a.save_calibration({"v": 1})
    b.update_manifest(encoder={"kind": "x"}, model_id="m")
    assert a.load_calibration() == {"v": 1} and a.model_id == "m"
    assert b.load_calibration() == {"v": 1}
    a.update_manifest(model_id=None)
    assert b.model_id is None and b.read_manifest()["encoder"] == {"kind": "x"}
    for key in ("modalities", "format", "name"):
        with pytest.raises(ValueError, match="maintained by the store"):
            a.update_manifest(**{key: 1})
    records = client.get_collection(a.manifest_name, embedding_function=None).get()
    assert sorted(records["ids"]) == ["field:calibration", "field:encoder"]
    client.close()


def test_first_layout_manifest_is_migrated_on_open(tmp_path):
    path = tmp_path / "db"
    client = chromadb.PersistentClient(path=str(path))
    cal = {"version": 1, "pairs": {"text->image": {"mu": 0.2, "sigma": 0.05}}}
    legacy = {
        "format": json.dumps(1),
        "name": json.dumps("old"),
        # "text" was lost from the list by a concurrent rewrite; its collection says it exists
        "modalities": json.dumps(["image"]),
        "model_id": json.dumps("clip-old"),
        "dim": json.dumps(D),
        "calibration": json.dumps(cal),
        "encoder": json.dumps({"kind": "open_clip"}),
    }
    client.create_collection("old-mmgap", embedding_function=None, metadata=legacy)
    text = client.create_collection(
        "old-text",
        embedding_function=None,
        configuration={"hnsw": {"space": "cosine"}},
        metadata={"mmgap_store": "old", "mmgap_modality": "text"},
    )
    text.add(ids=["t0", "t1"], embeddings=_vectors(2), metadatas=[{"modality": "text"}] * 2)

    store = ChromaStore(client, "old")
    manifest = store.read_manifest()
    assert manifest["model_id"] == "clip-old" and manifest["dim"] == D
    assert (
        manifest["modalities"] == ["image", "text"] and manifest["encoder"]["kind"] == "open_clip"
    )
    assert store.load_calibration() == cal and store.model_id == "clip-old" and store.dim == D
    assert store.counts() == {"image": 0, "text": 2}
    meta = client.get_collection("old-mmgap", embedding_function=None).metadata
    assert set(meta) == {"format", "name", "mmgap_manifest"} and json.loads(meta["format"]) == 2

    # Later writes stick: opening again does not bring the old values back.
    store.save_calibration({"version": 2})
    store.update_manifest(encoder=None)
    client.close()
    again = ChromaStore.persistent(path, "old")
    assert again.load_calibration() == {"version": 2}
    assert "encoder" not in again.read_manifest()
    assert again.query("text", _vectors(1, 5), 1).row_lengths() == [1]
    again.client.close()


def test_migration_never_overwrites_a_newer_record(tmp_path):
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    fresh = ChromaStore(client, "race")
    fresh.save_calibration({"version": "new"})
    # An old-version process rewrites the collection metadata after the new one wrote a record.
    client.get_collection("race-mmgap", embedding_function=None).modify(
        metadata={"format": "1", "calibration": json.dumps({"version": "old"}), "note": '"n"'}
    )
    reopened = ChromaStore(client, "race")
    assert reopened.load_calibration() == {"version": "new"}
    assert reopened.read_manifest()["note"] == "n"
    client.close()


def test_foreign_layout_calibration_persists_next_to_the_store(tmp_path):
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    col = client.create_collection("mixed-col", embedding_function=None)
    col.add(ids=["a", "b"], embeddings=_vectors(2), metadatas=[{"modality": "text"}] * 2)
    view = ForeignLayout.mixed(client, "mixed-col")
    assert view.load_calibration() is None
    view.save_calibration({"v": 1})
    # a fresh view of the same collection (a new process) finds it again
    assert ForeignLayout.mixed(client, "mixed-col").load_calibration() == {"v": 1}
    client.close()


def test_foreign_layout_calibration_can_stay_in_the_view(tmp_path):
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    col = client.create_collection("mixed-col", embedding_function=None)
    col.add(ids=["a", "b"], embeddings=_vectors(2), metadatas=[{"modality": "text"}] * 2)
    view = ForeignLayout.mixed(client, "mixed-col", persist_calibration=False)
    assert view.load_calibration() is None
    view.save_calibration({"v": 1})
    got = view.load_calibration()
    assert got == {"v": 1}
    got["v"] = 2  # a copy: the view's calibration is unchanged
    assert view.load_calibration() == {"v": 1}
    fresh = ForeignLayout.mixed(client, "mixed-col", persist_calibration=False)
    assert fresh.load_calibration() is None
    with pytest.raises(ValueError, match="must be a dict"):
        view.save_calibration([1])
    client.close()
