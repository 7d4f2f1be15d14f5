"""Decode untrusted image inputs into RGB PIL images, with bounded time and memory (no torch).

Every check runs *before* the expensive step it guards:

- A path must name a regular file (after following links) of at most :data:`MAX_IMAGE_FILE_BYTES`,
  checked on the open descriptor before any byte is read. A FIFO never blocks, and a link to
  ``/dev/zero`` is never read.
- The image header must declare at most ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (the decompression
  bomb check), and the image must stay within :data:`MAX_RESIZED_PIXELS` *after* the model's
  preprocessing resizes it. Both are checked on the header, before the pixels are decoded. A
  1x40000 PNG is only 40,000 pixels, but resizing its short side to 224 makes it 224 x 8.96 million
  pixels. Its aspect ratio, not its pixel count, is the danger.

An input that fails a check raises :class:`ImageSkip`, whose message is the reason to report.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # PIL loads on first decode: reading files and checking them needs none of it
    from PIL import Image


__all__ = [
    "MAX_IMAGE_FILE_BYTES",
    "MAX_RESIZED_PIXELS",
    "DecodeLimits",
    "ImageSkip",
    "decode_image",
    "describe_source",
    "read_image_file",
    "resized_size",
]

logger = logging.getLogger(__name__)

#: Largest image file read from disk, in bytes (64 MiB). Read at call time, like PIL's
#: ``Image.MAX_IMAGE_PIXELS``, so it can be raised for a session: assign a new value to
#: ``mmgap_core.encoders.image_decoding.MAX_IMAGE_FILE_BYTES``.
MAX_IMAGE_FILE_BYTES = 64 * 1024 * 1024

#: Largest image, in pixels, that the model's preprocessing may produce when it resizes an input
#: (2**24, about 16.8 million). With a 224-pixel short side this allows aspect ratios up to about
#: 334:1. Read at call time; ``None`` disables the check.
MAX_RESIZED_PIXELS: int | None = 1 << 24

_RESIZE_MODES = ("shortest", "longest", "squash")
# PIL reports bombs through the *global* warnings filter, and catch_warnings is not thread-safe,
# so only one decoding thread at a time may swap the filter (around the cheap header parse).
_PIL_WARNINGS_LOCK = threading.Lock()
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class ImageSkip(Exception):
    """An input that cannot be embedded; ``str(exc)`` is the reason, naming the source."""


@dataclass(frozen=True)
class DecodeLimits:
    """How a model's preprocessing will resize images, and the bounds decoding enforces.

    Parameters
    ----------
    target_size : int or tuple of int, optional
        The model's input size, as open_clip's preprocessing config gives it: one side, or
        ``(height, width)``. ``None`` skips the post-resize check.
    resize_mode : {"shortest", "longest", "squash"}
        open_clip's resize mode. Only ``"shortest"`` (scale the short side to the target, then
        center-crop) can enlarge a thin image.
    max_resized_pixels : int, optional
        Bound on the resized image; default :data:`MAX_RESIZED_PIXELS` at call time.
    max_file_bytes : int, optional
        Bound on a file read from disk; default :data:`MAX_IMAGE_FILE_BYTES` at call time.
    """

    target_size: int | tuple[int, int] | None = None
    resize_mode: str = "shortest"
    max_resized_pixels: int | None = None
    max_file_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.resize_mode not in _RESIZE_MODES:
            raise ValueError(
                f"resize_mode: expected one of {_RESIZE_MODES}, got {self.resize_mode!r}"
            )


def describe_source(item: Any) -> str:
    """How a reason names an input: the quoted path, or a neutral word for in-memory data.

    Parameters
    ----------
    item : object
        An image input.

    Returns
    -------
    str
        ``'<path>'`` for paths, ``"image data"`` for bytes, ``"PIL image"`` for PIL images, else the
        type name in angle brackets.
    """
    if isinstance(item, (str, os.PathLike)):
        return f"'{os.fspath(item)}'"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "image data"  # the caller knows where the bytes came from and names it
    if type(item).__module__.startswith("PIL."):  # a PIL image, without importing PIL
        return "PIL image"
    return f"<{type(item).__name__}>"


def _file_kind(mode: int) -> str:
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def _stat_target(path: str, source: str) -> os.stat_result:
    """``os.stat`` of the link target, or :class:`ImageSkip` naming what is wrong with the path."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            try:
                target = f" '{os.readlink(path)}'"
            except OSError:
                target = ""
            raise ImageSkip(f"dangling symbolic link: {source} points to missing{target}") from None
        raise ImageSkip(f"file not found: {source}") from None
    except PermissionError:
        raise ImageSkip(f"cannot read file (permission denied): {source}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageSkip(f"symbolic link loop: {source} never reaches a file") from None
        raise ImageSkip(f"cannot access file {source}: {exc.strerror or exc}") from None


def _check_file_stat(st: os.stat_result, source: str, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ImageSkip(f"not a regular file: {source} is {_file_kind(st.st_mode)}")
    if st.st_size == 0:
        raise ImageSkip(f"empty file: {source} holds no image data")
    if st.st_size > limit:
        raise ImageSkip(
            f"file too large: {source} is {st.st_size} bytes, above "
            f"MAX_IMAGE_FILE_BYTES={limit} (mmgap_core.encoders.image_decoding)"
        )


def read_image_file(path: str | os.PathLike, *, max_bytes: int | None = None) -> bytes:
    """Read an image file's bytes after checking that it is a bounded regular file.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Symbolic links are followed; the target must be a regular file.
    max_bytes : int, optional
        Largest size read; default :data:`MAX_IMAGE_FILE_BYTES` at call time.

    Returns
    -------
    bytes
        The whole file.

    Raises
    ------
    ImageSkip
        Missing file, dangling link, link loop, special file (FIFO, device, socket, directory),
        empty file, file over the size bound, or unreadable file. The reason names the path.

    Notes
    -----
    The descriptor is opened non-blocking (a FIFO would otherwise block in ``open``) and checked
    with ``fstat`` before reading, so a file swapped between the checks is still caught.
    """
    source = describe_source(path)
    name = os.fspath(path)
    if not isinstance(name, str):
        raise ImageSkip(f"unsupported path type {type(name).__name__}; use str paths")
    limit = MAX_IMAGE_FILE_BYTES if max_bytes is None else int(max_bytes)
    _check_file_stat(_stat_target(name, source), source, limit)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags)
    except PermissionError:
        raise ImageSkip(f"cannot read file (permission denied): {source}") from None
    except OSError:
        _stat_target(name, source)  # raises the precise reason if the path changed meanwhile
        raise ImageSkip(f"cannot open file: {source}") from None
    with open(fd, "rb", closefd=True) as fh:
        _check_file_stat(os.fstat(fd), source, limit)
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise ImageSkip(f"cannot read file {source}: {exc.strerror or exc}") from None
    if len(data) > limit:  # grew after the check
        raise ImageSkip(f"file too large: {source} is over MAX_IMAGE_FILE_BYTES={limit} bytes")
    if not data:
        raise ImageSkip(f"empty file: {source} holds no image data")
    return data


def resized_size(
    size: tuple[int, int], target_size: int | tuple[int, int], resize_mode: str = "shortest"
) -> tuple[int, int]:
    """``(width, height)`` of an image after open_clip's preprocessing resize, before cropping.

    Parameters
    ----------
    size : tuple of int
        ``(width, height)`` of the input, as PIL reports it.
    target_size : int or tuple of int
        The model's input size: one side, or ``(height, width)``.
    resize_mode : {"shortest", "longest", "squash"}
        ``"shortest"`` scales so the image covers the target (then crops), ``"longest"`` so it fits
        inside (then pads), ``"squash"`` resizes to the target exactly.

    Returns
    -------
    tuple of int
        The resized ``(width, height)``.
    """
    if isinstance(target_size, int):
        target_h = target_w = target_size
    else:
        target_h, target_w = (int(v) for v in target_size)
    width, height = max(int(size[0]), 1), max(int(size[1]), 1)
    if resize_mode == "squash":
        return target_w, target_h
    pick = max if resize_mode == "shortest" else min
    scale = pick(target_h / height, target_w / width)
    return max(round(width * scale), 1), max(round(height * scale), 1)


def _check_resized(size: tuple[int, int], source: str, limits: DecodeLimits) -> None:
    """Refuse an image that the model's resize would make huge (a thin or wide image)."""
    bound = MAX_RESIZED_PIXELS if limits.max_resized_pixels is None else limits.max_resized_pixels
    if bound is None or limits.target_size is None:
        return
    width, height = resized_size(size, limits.target_size, limits.resize_mode)
    if width * height > bound:
        raise ImageSkip(
            f"image too thin or too wide: {source} is {size[0]}x{size[1]} pixels, and the model's "
            f"preprocessing would resize it to {width}x{height} = {width * height} pixels, above "
            f"MAX_RESIZED_PIXELS={bound} (mmgap_core.encoders.image_decoding)"
        )


def _check_pixels(size: tuple[int, int], source: str, limits: DecodeLimits) -> None:
    """Refuse bombs (declared pixels over PIL's limit) and thin images (pixels after resizing)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise ImageSkip(
            f"decompression bomb refused: {source} declares {size[0]}x{size[1]} = "
            f"{size[0] * size[1]} pixels, above PIL.Image.MAX_IMAGE_PIXELS={limit}"
        )
    _check_resized(size, source, limits)


def _decode_pil(img: Image.Image, limits: DecodeLimits) -> Image.Image:
    # Already in memory (PIL checked bombs when it was opened): only the resize can blow up.
    _check_resized(img.size, describe_source(img), limits)
    try:
        img.load()
        return img.convert("RGB")
    except Exception as exc:
        raise ImageSkip(f"cannot decode PIL image: {type(exc).__name__}: {exc}") from exc


def _decode_bytes(data: bytes, source: str, limits: DecodeLimits) -> Image.Image:
    from PIL import Image

    try:
        with _PIL_WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # parses the header only
        with img:
            # Sizes can change at load (ICO/ICNS/GIF frames), so check before and after decoding.
            _check_pixels(img.size, source, limits)
            img.load()
            _check_pixels(img.size, source, limits)
            return img.convert("RGB")
    except ImageSkip:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageSkip(f"decompression bomb refused: {source}: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageSkip(
            f"not a recognised image file (PIL cannot identify its format): {source}"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # PIL signals broken data with OSError ("image file is truncated"), SyntaxError, EOFError.
        raise ImageSkip(
            f"corrupt or truncated image {source}: {type(exc).__name__}: {exc}"
        ) from exc


def decode_image(
    item: Any, limits: DecodeLimits | None = None, *, source: str | None = None
) -> Image.Image:
    """Check, decode and convert one input to an RGB PIL image.

    Parameters
    ----------
    item : str, os.PathLike, bytes, bytearray, memoryview or PIL.Image.Image
        A file path, encoded image bytes, or an in-memory PIL image.
    limits : DecodeLimits, optional
        The model's resize and the bounds to enforce; default: no post-resize check.
    source : str, optional
        How reasons name the input (e.g. the path that bytes were read from); default
        :func:`describe_source`.

    Returns
    -------
    PIL.Image.Image
        A fully decoded RGB image.

    Raises
    ------
    ImageSkip
        The input cannot be embedded; the message says why and names the source.
    """
    limits = limits or DecodeLimits()
    label = source or describe_source(item)
    from PIL import Image

    if isinstance(item, Image.Image):
        return _decode_pil(item, limits)
    if isinstance(item, (str, os.PathLike)):
        data = read_image_file(item, max_bytes=limits.max_file_bytes)
    elif isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) == 0:
            raise ImageSkip("empty bytes: no image data" + (f" ({source})" if source else ""))
        data = bytes(item)
    else:
        raise ImageSkip(
            f"unsupported input type {type(item).__name__}; expected a path (str or os.PathLike), "
            f"a PIL.Image.Image or encoded image bytes"
        )
    image = _decode_bytes(data, label, limits)
    logger.debug("decoded %s: %sx%s", label, *image.size)
    return image
