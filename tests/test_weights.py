"""Weights resolution, model ids and model names: offline lookup, content ids, hf-hub/local-dir."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from mmgap_core.encoders import WeightsUnavailableError, model_ids, weights

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from _fixtures_clip import TINY_CONFIG, make_local_dir  # noqa: E402

from mmgap_core.encoders.open_clip import OpenClipEncoder  # noqa: E402

HUB_REPO = "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"


@pytest.fixture
def offline(monkeypatch):
    """Offline mode as a real offline process sees it: the variable and huggingface_hub's flag."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _fake_hub_cache(cache: Path, repo_folder: str, files: dict[str, bytes | Path]) -> Path:
    """A Hugging Face cache entry (refs/main -> snapshot) holding ``files``."""
    snapshot = cache / repo_folder / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (cache / repo_folder / "refs").mkdir()
    (cache / repo_folder / "refs" / "main").write_text("0123abcd")
    for name, content in files.items():
        target = snapshot / name
        if isinstance(content, Path):
            shutil.copy(content, target)
        else:
            target.write_bytes(content)
    return snapshot


# ---------------------------------------------------------------------------------- tags


def test_cached_tag_weights_are_found_without_network(offline, tmp_path, no_network):
    snapshot = _fake_hub_cache(tmp_path, HUB_REPO, {"open_clip_model.safetensors": b"weights"})
    found = weights.find_cached_tag_weights("ViT-B-32", "laion2b_s34b_b79k", str(tmp_path))
    assert Path(found) == snapshot / "open_clip_model.safetensors"
    assert weights.weights_available_offline("ViT-B-32", "laion2b_s34b_b79k", str(tmp_path))
    assert weights.weights_available_offline("ViT-B/32", "laion2b-s34b-b79k", str(tmp_path))
    assert no_network == []


def test_uncached_tag_is_not_available_offline(offline, tmp_path, no_network):
    assert weights.find_cached_tag_weights("ViT-B-32", "laion2b_s34b_b79k", str(tmp_path)) is None
    assert not weights.weights_available_offline("ViT-B-32", "laion2b_s34b_b79k", str(tmp_path))
    assert not weights.weights_available_offline("ViT-B-32", "no_such_tag", str(tmp_path))
    assert weights.weights_available_offline("ViT-B-32", None)
    assert no_network == []


def test_plain_url_weights_are_looked_up_in_open_clips_cache(monkeypatch, tmp_path):
    cfg = {"url": "https://example.invalid/models/RN50.pt", "hf_hub": ""}
    monkeypatch.setattr(open_clip.pretrained, "get_pretrained_cfg", lambda model, tag: cfg)
    assert weights.find_cached_tag_weights("RN50", "x", str(tmp_path)) is None
    (tmp_path / "RN50.pt").write_bytes(b"cached")
    assert weights.find_cached_tag_weights("RN50", "x", str(tmp_path)) == str(tmp_path / "RN50.pt")


@pytest.mark.parametrize("env_var", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_without_cache_raises_quickly_and_stays_offline(
    env_var, monkeypatch, tmp_path, no_network
):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv(env_var, "1")
    assert weights.offline_mode()
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="ViT-B-32:laion2b_s34b_b79k") as info:
        OpenClipEncoder("ViT-B-32", "laion2b_s34b_b79k", device="cpu", cache_dir=tmp_path)
    assert time.perf_counter() - start < 5.0
    assert "offline" in str(info.value) and "not in the local cache" in str(info.value)
    assert no_network == []


def test_failed_download_is_weights_unavailable(monkeypatch, tmp_path, no_network):
    monkeypatch.setattr(weights, "offline_mode", lambda: False)

    def failing_download(cfg, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", failing_download)
    with pytest.raises(WeightsUnavailableError, match="could not be downloaded.*name resolution"):
        OpenClipEncoder("ViT-B-32", "laion2b_s34b_b79k", device="cpu", cache_dir=tmp_path)
    assert no_network == []


# ---------------------------------------------------------------------------------- identity


def test_file_hash_is_cached_on_disk_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setattr(model_ids, "user_cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(model_ids, "_hash_memo", {})
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"weights v1")
    first = model_ids.file_sha256(ckpt)
    assert first == hashlib.sha256(b"weights v1").hexdigest()
    stored = json.loads((tmp_path / "cache" / model_ids.HASH_CACHE_FILENAME).read_text())
    assert stored["entries"][os.path.realpath(ckpt)]["sha256"] == first

    # A fresh process (empty memo) reads the hash from disk instead of the file.
    monkeypatch.setattr(model_ids, "_hash_memo", {})
    real_open = open

    def no_checkpoint_reads(path, *args, **kwargs):
        assert os.path.realpath(path) != os.path.realpath(ckpt), "checkpoint re-hashed"
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_checkpoint_reads)
    assert model_ids.file_sha256(ckpt) == first
    monkeypatch.setattr("builtins.open", real_open)

    # New content (size and mtime change) -> hashed again.
    ckpt.write_bytes(b"weights version 2")
    os.utime(ckpt, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert model_ids.file_sha256(ckpt) == hashlib.sha256(b"weights version 2").hexdigest()


def test_unwritable_hash_cache_is_not_an_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setattr(model_ids, "user_cache_dir", lambda: blocker / "sub")
    monkeypatch.setattr(model_ids, "_hash_memo", {})
    (tmp_path / "w.pt").write_bytes(b"abc")
    assert model_ids.file_sha256(tmp_path / "w.pt") == hashlib.sha256(b"abc").hexdigest()


def test_canonical_model_id_drops_legacy_file_names():
    legacy = "open_clip:ViT-B-32:file:my weights:v2.pt:0123456789ab"
    assert model_ids.canonical_model_id(legacy) == "open_clip:ViT-B-32:file:0123456789ab"
    for current in (
        "open_clip:ViT-B-32:file:0123456789ab",
        "open_clip:ViT-B-32:laion2b_s34b_b79k",
        "simulator:clip-like",
    ):
        assert model_ids.canonical_model_id(current) == current


# ---------------------------------------------------------------------------------- model names


def test_local_dir_model_loads_offline(tiny_clip, tiny_encoder, tmp_path, no_network, offline):
    folder = make_local_dir(tmp_path / "my-model", tiny_clip)
    assert weights.weights_available_offline(f"local-dir:{folder}", None)
    enc = OpenClipEncoder(f"local-dir:{folder}", device="cpu")  # the default tag is ignored
    sha = hashlib.sha256(tiny_clip.checkpoint_path.read_bytes()).hexdigest()
    config_sha = hashlib.sha256((folder / "open_clip_config.json").read_bytes()).hexdigest()
    assert enc.model_id == f"open_clip:local-dir:{config_sha[:8]}:file:{sha[:12]}"
    assert enc.dim == 32 and enc.context_length == 16
    np.testing.assert_allclose(
        enc.embed_texts(["a cat", "a dog"]).vectors,
        tiny_encoder.embed_texts(["a cat", "a dog"]).vectors,
        atol=1e-6,
    )
    assert enc.spec() == {
        "kind": "open_clip",
        "model_name": "local-dir:my-model",
        "pretrained": None,
        "model_config": None,
        "weights_sha256": sha,
    }
    # The same folder moved elsewhere is the same model.
    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "renamed")
    assert OpenClipEncoder(f"local-dir:{moved}", None, device="cpu").model_id == enc.model_id
    assert no_network == []


def test_local_dir_errors_are_one_line_value_errors(tiny_clip, tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        OpenClipEncoder(f"local-dir:{tmp_path / 'missing'}", None, device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="lacks open_clip_config.json"):
        OpenClipEncoder(f"local-dir:{tmp_path / 'empty'}", None, device="cpu")
    folder = make_local_dir(tmp_path / "ok", tiny_clip)
    with pytest.raises(ValueError, match="load their own weights"):
        OpenClipEncoder(f"local-dir:{folder}", "openai", device="cpu")
    with pytest.raises(ValueError, match="drop model_config"):
        OpenClipEncoder(f"local-dir:{folder}", None, model_config=str(tiny_clip.config_path))


def test_hf_hub_model_loads_from_the_local_cache(
    tiny_clip, tiny_encoder, tmp_path, no_network, offline
):
    config = json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}).encode()
    _fake_hub_cache(
        tmp_path,
        "models--mmgap--tiny",
        {"open_clip_config.json": config, "open_clip_pytorch_model.bin": tiny_clip.checkpoint_path},
    )
    assert weights.weights_available_offline("hf-hub:mmgap/tiny", None, str(tmp_path))
    enc = OpenClipEncoder("hf-hub:mmgap/tiny", None, device="cpu", cache_dir=tmp_path)
    assert enc.model_id == "open_clip:hf-hub:mmgap/tiny"
    assert enc.spec()["model_name"] == "hf-hub:mmgap/tiny" and enc.spec()["pretrained"] is None
    np.testing.assert_allclose(
        enc.embed_query_text("a cat"), tiny_encoder.embed_query_text("a cat"), atol=1e-6
    )
    assert no_network == []


def test_hf_hub_model_offline_and_not_cached_is_weights_unavailable(tmp_path, no_network, offline):
    assert not weights.weights_available_offline("hf-hub:mmgap/absent", None, str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="hf-hub:mmgap/absent.*offline"):
        OpenClipEncoder("hf-hub:mmgap/absent", None, device="cpu", cache_dir=tmp_path)
    assert no_network == []
