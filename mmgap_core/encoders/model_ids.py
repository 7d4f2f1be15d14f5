"""Model ids: how mmgap names a model and its weights, and the cached content hashes they use.

A model id names the weights in store manifests and calibration files; a store refuses vectors of
another id. The open_clip backend builds them as follows:

============================  ===============================================================
weights                       model id
============================  ===============================================================
pretrained tag                ``open_clip:<model_name>:<tag>``
local checkpoint file         ``open_clip:<model_name>:file:<sha256[:12]>``
``hf-hub:org/repo``           ``open_clip:hf-hub:org/repo``
``local-dir:`` with weights   ``open_clip:local-dir:<config sha256[:8]>:file:<sha256[:12]>``
random init (tests)           ``open_clip:<model_name>:random:<parameters sha256[:12]>``
============================  ===============================================================

A local checkpoint is named by its *content*, so a byte-identical copy under another name or in
another folder has the same id. Earlier versions of mmgap made the file name part of it
(``open_clip:<model_name>:file:<name>:<sha256[:12]>``); :func:`canonical_model_id` maps such ids to
the current form. Hashes are cached by (real path, size, mtime): in memory, and in
:data:`HASH_CACHE_FILENAME` under :func:`user_cache_dir`, so a multi-GB checkpoint is read once.

Standard library only (the cache is written with :mod:`mmgap_core.jsonio`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "HASH_CACHE_FILENAME",
    "canonical_model_id",
    "checkpoint_model_id",
    "file_sha256",
    "tag_model_id",
    "user_cache_dir",
]

logger = logging.getLogger(__name__)

#: File name of the on-disk cache of checkpoint hashes, under :func:`user_cache_dir`.
HASH_CACHE_FILENAME = "weights-sha256.json"
_HASH_CACHE_FORMAT = "mmgap.weights-sha256"
_HASH_CACHE_MAX_ENTRIES = 256
_HASH_CHUNK = 1 << 20
_LEGACY_FILE_ID = re.compile(r"^(open_clip:[^:]+):file:.+:([0-9a-f]{12})$")
_hash_memo: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def tag_model_id(model_name: str, tag: str | None = None) -> str:
    """The id of weights named by a public identifier: ``open_clip:<model_name>[:<tag>]``."""
    return f"open_clip:{model_name}" if tag is None else f"open_clip:{model_name}:{tag}"


def checkpoint_model_id(model_name: str, sha256: str, kind: str = "file") -> str:
    """The id of content-addressed weights: ``open_clip:<model_name>:<kind>:<sha256[:12]>``.

    Parameters
    ----------
    model_name : str
        The model part (a ``local-dir:`` model passes ``local-dir:<config sha256[:8]>``).
    sha256 : str
        Hex digest of the checkpoint file, or of the parameters for ``kind="random"``.
    kind : {"file", "random"}
        ``"file"`` for a checkpoint, ``"random"`` for randomly initialised weights.

    Returns
    -------
    str
    """
    return f"open_clip:{model_name}:{kind}:{sha256[:12]}"


def user_cache_dir() -> Path:
    """mmgap's per-user cache folder: ``$XDG_CACHE_HOME/mmgap``, else ``~/.cache/mmgap``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmgap"


def _load_hash_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.debug("ignoring unreadable hash cache %s: %s", path, exc)
        return {}
    ok = isinstance(data, dict) and data.get("format") == _HASH_CACHE_FORMAT
    entries = data.get("entries") if ok else None
    return entries if isinstance(entries, dict) else {}


def _cached_digest(entries: dict[str, Any], key: tuple[str, int, int]) -> str | None:
    entry = entries.get(key[0])
    if not isinstance(entry, dict):
        return None
    digest = entry.get("sha256")
    if entry.get("size") != key[1] or entry.get("mtime_ns") != key[2]:
        return None
    return digest if isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest) else None


def _store_digest(path: Path, key: tuple[str, int, int], digest: str) -> None:
    from mmgap_core.jsonio import write_json

    entries = _load_hash_cache(path)
    entries.pop(key[0], None)
    entries[key[0]] = {"size": key[1], "mtime_ns": key[2], "sha256": digest}
    kept = dict(list(entries.items())[-_HASH_CACHE_MAX_ENTRIES:])
    try:
        write_json(path, {"format": _HASH_CACHE_FORMAT, "version": 1, "entries": kept})
    except OSError as exc:  # a read-only home must not stop loading a model
        logger.debug("cannot write hash cache %s: %s", path, exc)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's content, cached by (real path, size, mtime).

    Parameters
    ----------
    path : str or os.PathLike
        The file (checkpoints can be GBs: it is read in 1 MiB chunks, once).

    Returns
    -------
    str
        64 hex digits.
    """
    real = os.path.realpath(os.fspath(path))
    st = os.stat(real)
    key = (real, int(st.st_size), int(st.st_mtime_ns))
    with _hash_lock:
        if key in _hash_memo:
            return _hash_memo[key]
    cache_file = user_cache_dir() / HASH_CACHE_FILENAME
    digest = _cached_digest(_load_hash_cache(cache_file), key)
    if digest is None:
        logger.debug("hashing %s (%d bytes)", real, st.st_size)
        hasher = hashlib.sha256()
        with open(real, "rb") as fh:
            for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
                hasher.update(chunk)
        digest = hasher.hexdigest()
        _store_digest(cache_file, key, digest)
    with _hash_lock:
        _hash_memo[key] = digest
    return digest


def canonical_model_id(model_id: str) -> str:
    """The current form of a model id: a legacy file-named checkpoint id loses its file name.

    Parameters
    ----------
    model_id : str
        Any model id.

    Returns
    -------
    str
        ``open_clip:<model>:file:<sha12>`` for a legacy ``open_clip:<model>:file:<name>:<sha12>``,
        else ``model_id`` unchanged.
    """
    match = _LEGACY_FILE_ID.match(model_id)
    return f"{match.group(1)}:file:{match.group(2)}" if match else model_id
