"""Atomic file writing (bytes, text, strict JSON): a reader never sees a half-written file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide and not thread-safe

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "json_safe", "write_json"]


def json_safe(obj):
    """``obj`` with NaN/inf floats as ``None`` and keys as ``str``, so strict JSON can hold it."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write(path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` via ``write(fileobj)`` into a temp file beside it, then rename it in place.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder is created if missing.
    write : callable
        Called with a binary file object open for writing.

    Returns
    -------
    pathlib.Path
        The destination path.

    Notes
    -----
    The temp file has a unique name, so concurrent writers never share one; the last rename wins.
    On failure the temp file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, expected a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600 files; keep the mode a plain open() would give (or the old file's).
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; see :func:`atomic_write`."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; see :func:`atomic_write`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path, data) -> Path:
    """Write strict JSON (NaN/inf as null) to ``path`` atomically."""
    text = json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)
