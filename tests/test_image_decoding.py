"""Image decoding and safety checks (mmgap_core.encoders.image_decoding: numpy + PIL, no torch)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading

import pytest

Image = pytest.importorskip("PIL.Image")

from _fixtures_clip import write_png_1bit  # noqa: E402

from mmgap_core.encoders import image_decoding as dec  # noqa: E402
from mmgap_core.encoders.image_decoding import (  # noqa: E402
    DecodeLimits,
    ImageSkip,
    decode_image,
    read_image_file,
    resized_size,
)

CLIP_224 = DecodeLimits(target_size=224, resize_mode="shortest")
needs_posix_files = pytest.mark.skipif(
    not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="needs FIFOs and /dev/zero"
)


def _png_bytes(size=(40, 30), colour=(200, 10, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def _skip_reason(item, limits=CLIP_224) -> str:
    with pytest.raises(ImageSkip) as info:
        decode_image(item, limits)
    return str(info.value)


def _within(seconds: float, fn):
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) if it blocks."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"blocked for more than {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_module_imports_neither_torch_nor_open_clip():
    code = (
        "import sys, mmgap_core.encoders.image_decoding; "
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_valid_inputs_decode_to_rgb(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(_png_bytes())
    for item in (path, str(path), path.read_bytes(), bytearray(path.read_bytes())):
        img = decode_image(item, CLIP_224)
        assert img.mode == "RGB" and img.size == (40, 30)
    gray = Image.new("L", (10, 10), 7)
    assert decode_image(gray, CLIP_224).mode == "RGB"


@pytest.mark.parametrize(
    ("size", "target", "mode", "expected"),
    [
        ((1, 40000), 224, "shortest", (224, 8960000)),
        ((640, 480), 224, "shortest", (299, 224)),
        ((640, 480), 224, "longest", (224, 168)),
        ((640, 480), 224, "squash", (224, 224)),
        ((640, 480), (224, 336), "shortest", (336, 252)),
    ],
)
def test_resized_size_follows_open_clip_resize_modes(size, target, mode, expected):
    assert resized_size(size, target, mode) == expected


def test_thin_image_is_refused_before_its_pixels_are_decoded(tmp_path, monkeypatch):
    thin = write_png_1bit(tmp_path / "thin.png", 1, 40000)
    assert thin.stat().st_size < 1000  # a tiny file ...
    loads: list = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(self.size))
    reason = _skip_reason(thin)
    assert "too thin or too wide" in reason and f"'{thin}'" in reason
    assert "1x40000" in reason and "224x8960000" in reason and "MAX_RESIZED_PIXELS" in reason
    assert loads == []  # ... refused on its header
    assert "image data" in _skip_reason(thin.read_bytes()) and "bytes>" not in reason
    # Without a model resize (no target size) the same image is harmless and decodes.
    monkeypatch.undo()
    assert decode_image(thin).size == (1, 40000)
    # A squashing model never enlarges it either.
    assert decode_image(thin, DecodeLimits(target_size=224, resize_mode="squash")).size == (
        1,
        40000,
    )


def test_thin_in_memory_pil_image_is_refused():
    reason = _skip_reason(Image.new("L", (50000, 1)))
    assert "too thin or too wide" in reason and "PIL image" in reason


def test_resize_bound_is_read_at_call_time(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    path.write_bytes(_png_bytes((400, 100)))
    assert decode_image(path, CLIP_224).size == (400, 100)  # 896x224 after resizing
    monkeypatch.setattr(dec, "MAX_RESIZED_PIXELS", 100_000)
    assert "too thin or too wide" in _skip_reason(path)
    assert decode_image(path, DecodeLimits(target_size=224, max_resized_pixels=10**6))


def test_decompression_bomb_names_the_path(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(_png_bytes((300, 300)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    reason = _skip_reason(path)
    assert reason.startswith("decompression bomb refused") and f"'{path}'" in reason
    assert "bytes>" not in _skip_reason(path.read_bytes())
    assert "bytes>" not in _skip_reason(path.read_bytes(), DecodeLimits())
    named = pytest.raises(ImageSkip, decode_image, path.read_bytes(), source="'x/y.png'")
    assert "'x/y.png'" in str(named.value)


@needs_posix_files
def test_fifo_named_jpg_does_not_hang(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageSkip, match=r"not a regular file: .*pipe.jpg' is a FIFO"):
        _within(10, lambda: decode_image(fifo, CLIP_224))


@needs_posix_files
def test_link_to_dev_zero_is_not_read(tmp_path, monkeypatch):
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    opened: list = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a: opened.append(path) or real_open(path, *a))
    with pytest.raises(ImageSkip, match=r"not a regular file: .*zero.jpg' is a character device"):
        _within(10, lambda: read_image_file(link))
    assert opened == []  # refused on stat, never opened


def test_links_dangling_and_looping_say_so(tmp_path):
    dangling = tmp_path / "gone.jpg"
    dangling.symlink_to(tmp_path / "deleted.jpg")
    assert "dangling symbolic link" in _skip_reason(dangling) and "deleted.jpg" in _skip_reason(
        dangling
    )
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.symlink_to(b)
    b.symlink_to(a)
    assert "symbolic link loop" in _skip_reason(a)
    good = tmp_path / "good.png"
    good.write_bytes(_png_bytes())
    link = tmp_path / "link.png"
    link.symlink_to(good)
    assert decode_image(link).size == (40, 30)  # a link to a regular file is fine


def test_empty_missing_directory_and_oversized_files(tmp_path, monkeypatch):
    empty = tmp_path / "empty.png"
    empty.touch()
    assert _skip_reason(empty).startswith("empty file:")
    assert _skip_reason(tmp_path / "nope.png").startswith("file not found:")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    assert "is a directory" in _skip_reason(folder)
    big = tmp_path / "big.png"
    big.write_bytes(_png_bytes((64, 64)))
    monkeypatch.setattr(dec, "MAX_IMAGE_FILE_BYTES", 100)
    reason = _skip_reason(big)
    assert reason.startswith("file too large:") and "MAX_IMAGE_FILE_BYTES=100" in reason
    assert decode_image(big, DecodeLimits(max_file_bytes=10**6)).size == (64, 64)
    assert _skip_reason(b"").startswith("empty bytes")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_says_permission_denied(tmp_path):
    path = tmp_path / "secret.png"
    path.write_bytes(_png_bytes())
    path.chmod(0)
    try:
        assert "permission denied" in _skip_reason(path)
    finally:
        path.chmod(0o600)


def test_not_an_image_and_unsupported_types(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("hello\n")
    assert "not a recognised image" in _skip_reason(text)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(_png_bytes((200, 200), (1, 2, 3))[:60])
    assert "truncated" in _skip_reason(truncated) or "corrupt" in _skip_reason(truncated)
    assert "unsupported input type int" in _skip_reason(12345)
