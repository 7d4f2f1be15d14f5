"""Checks the factory runs before anything heavy loads or anything is created.

* :func:`weights_problem`: whether open_clip weights can be loaded now, answered in seconds
  (offline mode, a local file, the download caches, a DNS probe of the hub), so a command fails at
  once with the fix instead of waiting on download retries;
* :func:`check_store_location`: whether a folder holds, or may become, an embedded store;
* :class:`StoreNotFoundError`: raised where an existing store was asked for and there is none.

No backend library is imported here (``mmgap_core.encoders.weights`` is, lazily, for the cache
look-up that needs open_clip's tag table).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from ._paths import nearest_existing_parent

__all__ = [
    "HUB_PROBE_SECONDS",
    "StoreNotFoundError",
    "check_store_location",
    "weights_problem",
]

logger = logging.getLogger(__name__)

#: How long the hub's host name may take to resolve before it counts as unreachable.
HUB_PROBE_SECONDS = 3.0
_DEFAULT_DB = "mmgap-db"
_CHROMA_DB_FILE = "chroma.sqlite3"
_MANIFEST_SUFFIX = "-mmgap"


class StoreNotFoundError(ValueError):
    """No mmgap store where one was asked for; raised by ``open_store(..., create=False)``.

    Read-only work (searching, calibrating, inspecting) opens stores this way, so that a mistyped
    folder or store name is reported instead of silently creating an empty store.
    """


def _store_names(client: Any) -> list[str]:
    """The mmgap store names ``client`` holds (their manifest collections)."""
    names = []
    for col in client.list_collections():
        cname = getattr(col, "name", col)
        if isinstance(cname, str) and cname.endswith(_MANIFEST_SUFFIX):
            names.append(cname[: -len(_MANIFEST_SUFFIX)])
    return sorted(names)


def _missing_store(where: str, name: str, client: Any) -> StoreNotFoundError:
    others = _store_names(client)
    listed = f"stores there: {', '.join(others[:20])}" if others else "it holds no mmgap store"
    return StoreNotFoundError(f"no store named {name!r} in {where} ({listed})")


def check_store_location(db=None) -> Path:
    """Check that the folder ``db`` holds a Chroma store, or can become one; nothing is created.

    Parameters
    ----------
    db : str or os.PathLike, optional
        The embedded store's folder (default ``"mmgap-db"``).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    NotADirectoryError
        When ``db`` is a file.
    ValueError
        When it is a folder that holds other files and no Chroma store (a store is never
        written into, say, a folder of photos).
    """
    path = Path(db or _DEFAULT_DB).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a Chroma store folder")
    parent = nearest_existing_parent(path)
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot make the store folder {path}: {parent} is not a folder")
    if path.is_dir() and not (path / _CHROMA_DB_FILE).is_file() and any(path.iterdir()):
        raise ValueError(
            f"{path} is a folder that holds other files and no Chroma store: give an empty or "
            "new folder for the store"
        )
    return path


def weights_problem(model: str, pretrained: str | None) -> str | None:
    """Why open_clip weights certainly cannot be loaded now, in one line; ``None`` if they may.

    Answers within seconds, so a command can fail at once instead of waiting on download
    retries: a local file, or weights in the local cache, are fine; otherwise they need the
    Hugging Face hub, which offline mode (``HF_HUB_OFFLINE=1``) rules out, and an unresolvable hub
    host name (probed for at most :data:`HUB_PROBE_SECONDS`) makes impossible.

    Parameters
    ----------
    model : str
        The open_clip model name (``hf-hub:`` and ``local-dir:`` names included).
    pretrained : str or None
        A pretrained tag or a local checkpoint file (None: random weights, always loadable).

    Returns
    -------
    str or None
        The reason, naming the fixes (``--pretrained PATH``, downloading once online); ``None``
        when loading may work (a wrong file is still reported by the encoder itself).
    """
    if pretrained is None or os.path.isfile(os.fspath(pretrained)):
        if not str(model).startswith(("hf-hub:", "local-dir:")):
            return None
    elif _looks_like_a_path(os.fspath(pretrained)):
        path = os.fspath(pretrained)
        what = "is a folder, not" if os.path.isdir(path) else "does not exist: give"
        return (
            f"--pretrained {path} {what} a checkpoint file (pretrained= in Python); or name a "
            f"pretrained tag of {model}"
        )
    if str(model).startswith("local-dir:"):
        return None  # a local folder: the encoder says what is wrong with it, at once
    from .encoders.weights import offline_mode

    offline = offline_mode()
    reason = "offline mode is set (HF_HUB_OFFLINE)" if offline else _hub_unreachable()
    if reason is None:
        return None  # online: open_clip downloads them
    if not _nothing_cached():
        from .encoders.weights import weights_available_offline

        try:
            if weights_available_offline(model, pretrained):
                return None
        except Exception as exc:  # noqa: BLE001 - an unknown name: the encoder reports it
            logger.debug("weights_available_offline(%r, %r): %s", model, pretrained, exc)
            return None
    what = f"{model}/{pretrained}" if pretrained else str(model)
    hint = (
        "give a local checkpoint with --pretrained PATH (pretrained= in Python), or download "
        "the weights once while online"
    )
    if not offline:
        hint += "; set HF_HUB_OFFLINE=1 to never wait on the network"
    return f"the open_clip weights {what} are not in the local cache and {reason}: {hint}"


def _looks_like_a_path(text: str) -> bool:
    """A pretrained argument that names a file rather than a tag (tags are plain words)."""
    suffixes = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")
    return (
        os.sep in text
        or "/" in text
        or text.startswith((".", "~"))
        or text.lower().endswith(suffixes)
        or os.path.isdir(text)
    )


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub certainly cannot be reached now, else None (a DNS probe)."""
    import socket
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy resolves names itself
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    if not host:
        return None
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(socket.getaddrinfo, host, 443).result(timeout=HUB_PROBE_SECONDS)
    except (OSError, FutureTimeout) as exc:
        return f"{host} cannot be reached ({type(exc).__name__})"
    finally:
        pool.shutdown(wait=False)
    return None


def _nothing_cached() -> bool:
    """True when no download cache holds any model file at all (no need to import open_clip)."""
    try:
        from huggingface_hub import constants

        hub = Path(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - an open_clip dependency
        return False
    clip = Path(os.path.expanduser("~/.cache/clip"))
    try:
        if clip.is_dir() and any(clip.iterdir()):
            return False
        return not (hub.is_dir() and any(p.name.startswith("models--") for p in hub.iterdir()))
    except OSError:
        return False


def _require_local_files(spec: Mapping[str, Any], pretrained, model_config) -> None:
    """Say which option to give when a recorded encoder used local files (recorded by name)."""
    model_name = str(spec.get("model_name") or "")
    sha = spec.get("weights_sha256")
    if model_name.startswith("local-dir:"):
        raise ValueError(
            f"this store was built with the local model folder {model_name.split(':', 1)[1]!r}: "
            "name it again with --model local-dir:PATH (model='local-dir:PATH' in Python)"
        )
    if sha and pretrained is None:
        raise ValueError(
            f"this store was built with the local weights file {spec.get('pretrained')!r} "
            f"(sha256 {str(sha)[:12]}...): name it again with --pretrained PATH (pretrained= in "
            "Python); any byte-identical copy works"
        )
    if spec.get("model_config") and model_config is None:
        raise ValueError(
            f"this store was built with the model config {spec.get('model_config')!r}: name it "
            "again with --model-config PATH (model_config= in Python)"
        )


# ---------------------------------------------------------------------------------- engines
