"""Encoder contract and the open_clip backend, on a tiny random checkpoint (CPU, no downloads)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

from mmgap_core.encoders import EmbeddingSet, Encoder
from mmgap_core.encoders.base import encoder_spec

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
Image = pytest.importorskip("PIL.Image")

from mmgap_core.encoders import batching  # noqa: E402
from mmgap_core.encoders import open_clip as oc_backend  # noqa: E402
from mmgap_core.encoders.open_clip import OpenClipEncoder  # noqa: E402

TEXTS = ["a photo of a cat", "a red square", "an astronaut on the moon", "coffee", "x", "the sea"]


def _unit_rows(vectors: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5))


# ---------------------------------------------------------------------------------- loading


def test_loads_tiny_checkpoint_through_open_clip(tiny_encoder, tiny_clip):
    enc = tiny_encoder
    assert enc.dim == 32
    assert str(enc.device) == "cpu"
    sha = hashlib.sha256(tiny_clip.checkpoint_path.read_bytes()).hexdigest()[:12]
    assert enc.model_id == f"open_clip:mmgap-tiny:file:{sha}"
    # The weights really come from the checkpoint file.
    saved = torch.load(tiny_clip.checkpoint_path, map_location="cpu", weights_only=True)
    loaded = enc._model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    # The default SimpleTokenizer honours the config's context_length.
    assert enc.context_length == 16
    assert tuple(open_clip.get_tokenizer(tiny_clip.model_name)(["hello"]).shape) == (1, 16)


def test_model_id_tracks_checkpoint_content(tiny_clip, tiny_encoder, tmp_path):
    from _fixtures_clip import make_tiny_checkpoint

    other = make_tiny_checkpoint(tiny_clip.config_path, tmp_path / "tiny.pt", seed=1)
    enc_other = OpenClipEncoder(
        tiny_clip.model_name, str(other), model_config=str(tiny_clip.config_path), device="cpu"
    )
    # Same file name, different weights -> different identity and different vectors.
    assert enc_other.model_id != tiny_encoder.model_id
    assert enc_other.model_id.startswith("open_clip:mmgap-tiny:file:")
    assert not np.allclose(
        enc_other.embed_query_text("a cat"), tiny_encoder.embed_query_text("a cat"), atol=1e-3
    )
    # Same bytes under another name, in another folder -> same identity (issue 10 #5).
    copy_dir = tmp_path / "moved"
    copy_dir.mkdir()
    for name in ("tiny.pt", "renamed-weights.bin"):
        copied = shutil.copy(tiny_clip.checkpoint_path, copy_dir / name)
        enc_copy = OpenClipEncoder(
            tiny_clip.model_name, copied, model_config=str(tiny_clip.config_path), device="cpu"
        )
        assert enc_copy.model_id == tiny_encoder.model_id
        assert enc_copy.spec()["pretrained"] == name


def test_spec_records_no_absolute_paths_and_rebuilds_the_encoder(tiny_clip, tiny_encoder):
    spec = tiny_encoder.spec()
    sha = hashlib.sha256(tiny_clip.checkpoint_path.read_bytes()).hexdigest()
    assert spec == {
        "kind": "open_clip",
        "model_name": "mmgap-tiny",
        "pretrained": "tiny.pt",
        "model_config": "mmgap-tiny.json",
        "weights_sha256": sha,
    }
    assert json.loads(json.dumps(spec)) == spec
    assert not any(os.sep in v for v in spec.values() if isinstance(v, str))
    # The user names the local files again; the content hash tells them apart.
    folder = tiny_clip.checkpoint_path.parent
    rebuilt = OpenClipEncoder(
        spec["model_name"],
        str(folder / spec["pretrained"]),
        model_config=str(folder / spec["model_config"]),
        device="cpu",
    )
    assert rebuilt.model_id == tiny_encoder.model_id
    assert rebuilt.spec() == spec
    assert encoder_spec(tiny_encoder) == spec


def test_random_init_is_labelled_random(tiny_clip):
    enc = OpenClipEncoder(
        tiny_clip.model_name, None, model_config=str(tiny_clip.config_path), device="cpu"
    )
    assert enc.model_id.startswith("open_clip:mmgap-tiny:random:")
    assert enc.dim == 32
    assert enc.spec()["pretrained"] is None and enc.spec()["weights_sha256"] is None


def test_a_file_that_is_not_a_checkpoint_is_one_value_error(tiny_clip, tmp_path):
    junk = tmp_path / "notes.pt"
    junk.write_text("not a checkpoint\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"pretrained: cannot load '.*notes.pt' as open_clip"
    ) as info:
        OpenClipEncoder(
            tiny_clip.model_name, str(junk), model_config=str(tiny_clip.config_path), device="cpu"
        )
    assert "\n" not in str(info.value)


def test_unknown_model_name_is_value_error():
    with pytest.raises(ValueError, match=r"unknown open_clip model 'ViT-B-33'.*list_models\(\)"):
        OpenClipEncoder("ViT-B-33", "laion2b_s34b_b79k", device="cpu")


def test_unknown_tag_names_valid_tags(no_network):
    with pytest.raises(ValueError, match="laion2b_s34b_b79k") as info:
        OpenClipEncoder("ViT-B-32", "no_such_tag", device="cpu")
    assert "no_such_tag" in str(info.value)
    with pytest.raises(ValueError, match="neither a pretrained tag"):
        OpenClipEncoder("ViT-B-32", "/does/not/exist.pt", device="cpu")
    assert no_network == []


def test_model_config_must_be_named_after_model(tiny_clip, tmp_path):
    wrong = tmp_path / "other-name.json"
    wrong.write_text(tiny_clip.config_path.read_text())
    with pytest.raises(ValueError, match="rename the file to 'mmgap-tiny.json'"):
        OpenClipEncoder("mmgap-tiny", None, model_config=str(wrong), device="cpu")
    with pytest.raises(ValueError, match="file not found"):
        OpenClipEncoder("mmgap-tiny", None, model_config=str(tmp_path / "mmgap-tiny.json"))


def test_bad_options_are_value_errors(tiny_clip):
    kwargs = {"model_config": str(tiny_clip.config_path), "device": "cpu"}
    with pytest.raises(ValueError, match="precision"):
        OpenClipEncoder(tiny_clip.model_name, None, precision="fp8", **kwargs)
    with pytest.raises(ValueError, match="batch_size"):
        OpenClipEncoder(tiny_clip.model_name, None, batch_size=0, **kwargs)
    with pytest.raises(ValueError, match="num_workers"):
        OpenClipEncoder(tiny_clip.model_name, None, num_workers=-1, **kwargs)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_stays_close_to_fp32(tiny_clip, tiny_encoder, sample_images, precision):
    low = OpenClipEncoder(
        tiny_clip.model_name,
        str(tiny_clip.checkpoint_path),
        model_config=str(tiny_clip.config_path),
        device="cpu",
        precision=precision,
    )
    assert low.model_id == tiny_encoder.model_id
    for embed in ("embed_texts", "embed_images"):
        items = TEXTS[:3] if embed == "embed_texts" else sample_images[:2]
        got = getattr(low, embed)(items).vectors
        assert got.dtype == np.float32 and _unit_rows(got)
        np.testing.assert_allclose(got, getattr(tiny_encoder, embed)(items).vectors, atol=0.03)


def test_device_auto_selection(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert oc_backend._select_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert oc_backend._select_device(None) == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert oc_backend._select_device(None) == torch.device("cuda")
    assert oc_backend._select_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        oc_backend._select_device("not-a-device")


def test_missing_clip_extra_names_the_extra():
    code = (
        "import sys; sys.modules['open_clip'] = None\n"
        "try:\n"
        "    from mmgap_core.encoders import OpenClipEncoder\n"
        "except ImportError as exc:\n"
        "    assert 'mmgap[clip]' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('imported without open_clip')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_package_import_does_not_load_torch():
    code = (
        "import sys, mmgap_core.encoders as e; "
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules; "
        "assert 'OpenClipEncoder' in dir(e)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------------------- texts


def test_text_vectors_are_unit_float32_and_deterministic(tiny_encoder):
    first = tiny_encoder.embed_texts(TEXTS)
    second = tiny_encoder.embed_texts(TEXTS)
    assert isinstance(first, EmbeddingSet)
    assert first.vectors.dtype == np.float32 and first.vectors.shape == (len(TEXTS), 32)
    assert first.modality == "text" and first.model_id == tiny_encoder.model_id
    assert first.indices.dtype == np.int64 and first.indices.tolist() == list(range(len(TEXTS)))
    assert first.failures == {}
    assert _unit_rows(first.vectors)
    np.testing.assert_array_equal(first.vectors, second.vectors)
    # Different texts give different vectors (the model is not degenerate).
    assert np.abs(first.vectors[0] - first.vectors[1]).max() > 1e-3


def test_text_batch_size_does_not_change_vectors(tiny_encoder):
    one = tiny_encoder.embed_texts(TEXTS, batch_size=1).vectors
    four = tiny_encoder.embed_texts(TEXTS, batch_size=4).vectors
    all_at_once = tiny_encoder.embed_texts(TEXTS, batch_size=64).vectors
    np.testing.assert_allclose(one, four, atol=1e-5)
    np.testing.assert_allclose(one, all_at_once, atol=1e-5)


def test_empty_and_non_str_texts_are_failures(tiny_encoder):
    texts = ["a cat", "", "   \n", None, "a dog", 42]
    result = tiny_encoder.embed_texts(texts)
    assert result.indices.tolist() == [0, 4]
    assert set(result.failures) == {1, 2, 3, 5}
    assert "empty" in result.failures[1] and "empty" in result.failures[2]
    assert "not a string" in result.failures[3] and "int" in result.failures[5]
    clean = tiny_encoder.embed_texts(["a cat", "a dog"]).vectors
    np.testing.assert_allclose(result.vectors, clean, atol=1e-6)

    with pytest.raises(ValueError, match=r"strict=True: 4 texts.*\[1\] empty"):
        tiny_encoder.embed_texts(texts, strict=True)
    with pytest.raises(ValueError, match="query text: empty"):
        tiny_encoder.embed_query_text("  ")
    with pytest.raises(ValueError, match="single str"):
        tiny_encoder.embed_texts("a cat")

    nothing = tiny_encoder.embed_texts(["", " "])
    assert nothing.vectors.shape == (0, 32) and len(nothing) == 0


def test_query_text_matches_batch_row(tiny_encoder):
    query = tiny_encoder.embed_query_text("an astronaut on the moon")
    assert query.shape == (32,) and query.dtype == np.float32
    np.testing.assert_allclose(query, tiny_encoder.embed_texts(TEXTS).vectors[2], atol=1e-5)


def test_progress_bar_counts_items(tiny_encoder, sample_images, capsys):
    tiny_encoder.embed_texts(TEXTS, progress=True)
    tiny_encoder.embed_images(sample_images[:3], progress=True)
    err = capsys.readouterr().err
    assert "embedding texts" in err and f"{len(TEXTS)}/{len(TEXTS)}" in err
    assert "embedding images" in err and "3/3" in err
    tiny_encoder.embed_texts(TEXTS)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------- images


def test_sample_images_all_embed(tiny_encoder, sample_images):
    result = tiny_encoder.embed_images(sample_images)
    assert result.failures == {}
    assert result.modality == "image"
    assert result.vectors.shape == (len(sample_images), 32) and result.vectors.dtype == np.float32
    assert _unit_rows(result.vectors)
    np.testing.assert_array_equal(result.vectors, tiny_encoder.embed_images(sample_images).vectors)


def test_image_batch_size_and_workers_do_not_change_vectors(tiny_clip, tiny_encoder, sample_images):
    reference = tiny_encoder.embed_images(sample_images, batch_size=len(sample_images)).vectors
    np.testing.assert_allclose(
        tiny_encoder.embed_images(sample_images, batch_size=3).vectors, reference, atol=1e-5
    )
    np.testing.assert_allclose(
        tiny_encoder.embed_images(sample_images[:3], batch_size=1).vectors, reference[:3], atol=1e-5
    )
    inline = OpenClipEncoder(
        tiny_clip.model_name,
        str(tiny_clip.checkpoint_path),
        model_config=str(tiny_clip.config_path),
        device="cpu",
        num_workers=0,
    )
    np.testing.assert_allclose(inline.embed_images(sample_images).vectors, reference, atol=1e-5)


def test_path_pil_and_bytes_inputs_agree(tiny_encoder, sample_images):
    for path in sample_images[:4]:
        with Image.open(path) as img:
            img.load()
            pil = img.copy()
        inputs = [str(path), path, pil, path.read_bytes(), bytearray(path.read_bytes())]
        result = tiny_encoder.embed_images(inputs)
        assert result.failures == {}
        for row in result.vectors[1:]:
            np.testing.assert_allclose(row, result.vectors[0], atol=1e-6)
        np.testing.assert_allclose(
            tiny_encoder.embed_query_image(pil), result.vectors[0], atol=1e-6
        )


def test_bad_images_fail_with_reasons_and_good_ones_embed(tiny_encoder, sample_images, bad_images):
    expected_words = {
        "missing_file": "file not found",
        "truncated_jpeg": "truncated",
        "text_named_jpg": "not a recognised image",
        "decompression_bomb": "decompression bomb",
        "decompression_bomb_warning": "decompression bomb",
    }
    assert set(bad_images) == set(expected_words)
    good = sample_images[:3]
    items: list = [good[0]]
    bad_positions: dict[int, str] = {}
    for kind, path in bad_images.items():
        bad_positions[len(items)] = kind
        items.append(path)
    items += [good[1], 12345, b"", good[2]]
    bad_positions[len(items) - 3] = "unsupported"
    bad_positions[len(items) - 2] = "empty bytes"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tiny_encoder.embed_images(items, batch_size=3)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]

    assert set(result.failures) == set(bad_positions)
    for pos, kind in bad_positions.items():
        reason = result.failures[pos]
        assert expected_words.get(kind, kind.split()[0]) in reason, (kind, reason)
    assert "unsupported input type int" in result.failures[len(items) - 3]
    good_positions = [i for i in range(len(items)) if i not in bad_positions]
    assert result.indices.tolist() == good_positions
    np.testing.assert_allclose(result.vectors, tiny_encoder.embed_images(good).vectors, atol=1e-6)

    with pytest.raises(ValueError, match="strict=True.*could not be embedded"):
        tiny_encoder.embed_images(items, strict=True)
    with pytest.raises(ValueError, match="query image: file not found"):
        tiny_encoder.embed_query_image(bad_images["missing_file"])
    with pytest.raises(ValueError, match="single str"):
        tiny_encoder.embed_images(str(good[0]))


def test_lowered_pixel_limit_is_honoured(tiny_encoder, sample_images, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    result = tiny_encoder.embed_images([sample_images[0]])
    assert "decompression bomb" in result.failures[0]


def test_decoding_is_pipelined_with_the_forward_pass(tiny_clip, sample_images, monkeypatch):
    enc = OpenClipEncoder(
        tiny_clip.model_name,
        str(tiny_clip.checkpoint_path),
        model_config=str(tiny_clip.config_path),
        device="cpu",
        batch_size=2,
        num_workers=2,
    )
    items = list(sample_images[:4])
    second_batch_decoding = threading.Event()
    decode_threads: set[str] = set()
    real_prepare = batching.prepare_image

    def prepare(item, preprocess, limits):
        decode_threads.add(threading.current_thread().name)
        if item in items[2:]:
            second_batch_decoding.set()
        return real_prepare(item, preprocess, limits)

    monkeypatch.setattr(batching, "prepare_image", prepare)
    real_encode_image = enc._model.encode_image
    overlapped: list[bool] = []

    def encode_image(pixels, *args, **kwargs):
        if not overlapped:  # forward pass of batch 0: batch 1 must already be decoding
            overlapped.append(second_batch_decoding.wait(timeout=10))
        return real_encode_image(pixels, *args, **kwargs)

    monkeypatch.setattr(enc._model, "encode_image", encode_image)
    result = enc.embed_images(items)
    assert result.failures == {} and len(result) == 4
    assert overlapped == [True]
    assert decode_threads and all(name.startswith("mmgap-decode") for name in decode_threads)


# ---------------------------------------------------------------------------------- contract


class HashingFakeEncoder:
    """A numpy-only encoder: any model can be plugged in by implementing the protocol."""

    model_id = "fake:hashing:v1"
    dim = 8

    def _rows(self, keys: list[bytes]) -> np.ndarray:
        rows = (
            np.stack(
                [np.frombuffer(hashlib.sha256(k).digest()[: self.dim], np.uint8) for k in keys]
            ).astype(np.float32)
            + 1.0
        )
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def embed_texts(self, texts, *, batch_size=None, progress=False, strict=False):
        ok = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        failures = {i: "empty text" for i in range(len(texts)) if i not in ok}
        if strict and failures:
            raise ValueError(f"failures: {failures}")
        rows = self._rows([texts[i].encode() for i in ok]) if ok else np.zeros((0, self.dim))
        return EmbeddingSet(rows, self.model_id, "text", np.asarray(ok), failures)

    def embed_images(self, images, *, batch_size=None, progress=False, strict=False):
        keys = [os.fsencode(p) for p in images]
        return EmbeddingSet(self._rows(keys), self.model_id, "image", np.arange(len(keys)))

    def embed_query_text(self, text):
        return self.embed_texts([text], strict=True).vectors[0]

    def embed_query_image(self, image):
        return self.embed_images([image]).vectors[0]


def test_any_model_can_implement_the_encoder_protocol(tiny_encoder):
    fake = HashingFakeEncoder()
    assert isinstance(fake, Encoder)
    assert isinstance(tiny_encoder, Encoder)
    assert not isinstance(object(), Encoder)
    result = fake.embed_texts(["a", "", "b"])
    assert result.indices.tolist() == [0, 2] and result.failures == {1: "empty text"}
    assert result.vectors.dtype == np.float32 and _unit_rows(result.vectors)
    assert fake.embed_images(["x.png"]).dim == fake.dim
    assert encoder_spec(fake) is None  # no spec(): nothing to record, nothing to rebuild


def test_embedding_set_behaves_like_an_array():
    vectors = np.eye(3, 4, dtype=np.float32)
    es = EmbeddingSet(vectors, "m", "image", np.array([0, 2, 5]), {1: "missing"})
    assert len(es) == 3 and es.dim == 4
    assert np.asarray(es) is es.vectors
    assert np.asarray(es, dtype=np.float64).dtype == np.float64
    assert np.array(es, copy=True) is not es.vectors
    assert es.indices.dtype == np.int64
    with pytest.raises(ValueError, match="indices"):
        EmbeddingSet(vectors, "m", "image", np.array([0, 1]))
    with pytest.raises(ValueError, match="modality"):
        EmbeddingSet(vectors, "m", "audio", np.arange(3))
    with pytest.raises(ValueError, match="both embedded and listed as failures"):
        EmbeddingSet(vectors, "m", "text", np.arange(3), {2: "oops"})
