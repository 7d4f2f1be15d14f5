"""CLIP fixtures: a tiny random open_clip checkpoint (no downloads) and real image files.

``tiny_clip`` writes an open_clip model config + a seeded random checkpoint, so the encoder is
exercised through exactly the loading path real checkpoints take. ``sample_images`` and
``bad_images`` write real files (scikit-image's bundled samples, PIL drawings, broken files).
"""

from __future__ import annotations

import json
import socket
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

TINY_MODEL_NAME = "mmgap-tiny"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}

__all__ = [
    "TINY_CONFIG",
    "TINY_MODEL_NAME",
    "TinyClip",
    "bad_images",
    "isolated_weights_hash_cache",
    "li_embedding",
    "make_local_dir",
    "make_tiny_checkpoint",
    "model_args",
    "no_network",
    "sample_images",
    "tiny_clip",
    "tiny_encoder",
    "write_png_1bit",
]


@dataclass(frozen=True)
class TinyClip:
    """Where the tiny model lives.

    Load it with ``OpenClipEncoder(model_name, pretrained=str(checkpoint_path),
    model_config=str(config_path))``.
    """

    model_name: str
    config_path: Path
    checkpoint_path: Path


def make_tiny_checkpoint(config_path: Path, checkpoint_path: Path, seed: int) -> Path:
    """Save a seeded random state_dict of the model defined by ``config_path``."""
    import open_clip
    import torch

    open_clip.add_model_config(config_path)
    with torch.random.fork_rng(devices=[]):  # keep the global RNG of other tests untouched
        torch.manual_seed(seed)
        model = open_clip.create_model(config_path.stem, pretrained=None, device="cpu")
    torch.save(model.state_dict(), checkpoint_path)
    return checkpoint_path


@pytest.fixture(scope="session", autouse=True)
def isolated_weights_hash_cache(tmp_path_factory):
    """Keep :mod:`mmgap_core.encoders.model_ids`'s checkpoint-hash cache out of the user's home."""
    from mmgap_core.encoders import model_ids

    folder = tmp_path_factory.mktemp("mmgap_user_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_ids, "user_cache_dir", lambda: folder)
        yield folder


def make_local_dir(
    folder: Path, tiny: TinyClip, weights_name: str = "open_clip_pytorch_model.bin"
) -> Path:
    """An open_clip ``local-dir:`` folder: ``open_clip_config.json`` + the tiny checkpoint.

    open_clip reads ``{"model_cfg": ..., "preprocess_cfg": ...}`` from the config file and loads the
    weights file it prefers in the folder (``*.safetensors``, ``*.bin``, ``*.pth``).
    """
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config), encoding="utf-8")
    shutil.copy(tiny.checkpoint_path, folder / weights_name)
    return folder


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> TinyClip:
    """A tiny open_clip architecture ("mmgap-tiny", embed_dim 32) with seeded random weights."""
    root = tmp_path_factory.mktemp("tiny_clip")
    config_path = root / f"{TINY_MODEL_NAME}.json"
    config_path.write_text(json.dumps(TINY_CONFIG, indent=2), encoding="utf-8")
    checkpoint_path = make_tiny_checkpoint(config_path, root / "tiny.pt", seed=0)
    return TinyClip(TINY_MODEL_NAME, config_path, checkpoint_path)


@pytest.fixture
def tiny_encoder(tiny_clip: TinyClip):
    """``OpenClipEncoder`` over the tiny checkpoint, on CPU, batch size 8."""
    from mmgap_core.encoders.open_clip import OpenClipEncoder

    return OpenClipEncoder(
        tiny_clip.model_name,
        pretrained=str(tiny_clip.checkpoint_path),
        model_config=str(tiny_clip.config_path),
        device="cpu",
        batch_size=8,
    )


@pytest.fixture(scope="module")
def li_embedding(tiny_clip: TinyClip):
    """LlamaIndex's ``OpenClipMultiModalEmbedding`` built from model name + checkpoint + config,
    the way users load a custom model."""
    from mmgap_llamaindex import OpenClipMultiModalEmbedding

    return OpenClipMultiModalEmbedding(
        tiny_clip.model_name,
        pretrained=str(tiny_clip.checkpoint_path),
        model_config=str(tiny_clip.config_path),
        device="cpu",
    )


def model_args(tiny: TinyClip, *extra: str) -> list[str]:
    """The ``mmgap`` command-line flags that load the tiny model, then ``extra``."""
    return [
        "--model",
        tiny.model_name,
        "--pretrained",
        str(tiny.checkpoint_path),
        "--model-config",
        str(tiny.config_path),
        *extra,
    ]


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every attempt to open a connection or resolve a host name."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network access attempted during a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


#: Texts indexed beside the sample images by the engine tests.
SAMPLE_TEXTS = [
    "a cat sleeping on a windowsill",
    "a cup of hot coffee",
    "an astronaut floating in space",
    "a man holding a camera",
    "a red rocket on the launch pad",
    "a bowl of fruit on a table",
    "snowy mountains under a blue sky",
    "a bicycle against a brick wall",
]


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory) -> list[Path]:
    """Real, valid image files: scikit-image samples (PNG/JPEG, one grayscale) and PIL drawings."""
    from PIL import Image
    from skimage import data

    root = tmp_path_factory.mktemp("sample_images")
    paths: list[Path] = []

    def save(array_or_image, name: str, **kwargs) -> None:
        img = (
            array_or_image
            if isinstance(array_or_image, Image.Image)
            else Image.fromarray(array_or_image)
        )
        path = root / name
        img.save(path, **kwargs)
        paths.append(path)

    save(data.astronaut(), "astronaut.png")
    save(data.coffee(), "coffee.jpg", quality=90)
    save(data.chelsea(), "chelsea.jpg", quality=90)
    save(data.camera(), "camera.png")  # mode "L": must be converted to RGB
    save(Image.new("RGB", (64, 48), (220, 30, 30)), "solid_red.png")
    save(Image.new("RGB", (40, 40), (20, 40, 200)), "solid_blue.jpg", quality=95)
    ramp = np.linspace(0, 255, 96, dtype=np.uint8)
    gradient = np.stack(
        [np.tile(ramp, (64, 1)), np.tile(ramp[::-1], (64, 1)), np.full((64, 96), 128, np.uint8)],
        axis=-1,
    )
    save(gradient, "gradient.png")
    rgba = np.dstack([gradient, np.tile(ramp[:64, None], (1, 96))])
    save(rgba, "gradient_rgba.png")  # mode "RGBA"
    return paths


def write_png_1bit(path: Path, width: int, height: int) -> Path:
    """Write a valid all-black 1-bit grayscale PNG of the given size, cheaply.

    Cheap because zeros compress ~1000x.
    """

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    row = bytes(1 + (width + 7) // 8)  # filter byte 0 + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="session")
def bad_images(tmp_path_factory, sample_images) -> dict[str, Path]:
    """Files ``embed_images`` must refuse, keyed by what is wrong with them.

    Keys: ``missing_file``, ``truncated_jpeg``, ``text_named_jpg``, ``decompression_bomb`` (declares
    more than 2x PIL's default MAX_IMAGE_PIXELS: PIL raises DecompressionBombError) and
    ``decompression_bomb_warning`` (between 1x and 2x: PIL only warns; mmgap must still refuse).
    """
    root = tmp_path_factory.mktemp("bad_images")
    jpeg = next(p for p in sample_images if p.suffix == ".jpg" and p.stat().st_size > 10_000)
    truncated = root / "truncated.jpg"
    truncated.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    text = root / "notes.jpg"
    text.write_text("this is a text file, not a JPEG\n", encoding="utf-8")

    # PIL's default MAX_IMAGE_PIXELS, hard-coded so that a patched limit cannot shrink the files.
    limit = 89_478_485
    side_error = int((2 * limit) ** 0.5) + 400  # 13778 -> 189.8 M pixels > 2x limit
    side_warning = int(limit**0.5) + 400  # 9859 -> 97.2 M pixels, between 1x and 2x
    return {
        "missing_file": root / "does_not_exist.png",
        "truncated_jpeg": truncated,
        "text_named_jpg": text,
        "decompression_bomb": write_png_1bit(root / "bomb.png", side_error, side_error),
        "decompression_bomb_warning": write_png_1bit(
            root / "bomb_warn.png", side_warning, side_warning
        ),
    }
