"""Backend wiring: open a Chroma store and the open_clip encoder it was built with, as an engine.

This is the only core module that names the backends (Chroma, open_clip); they load on first use,
so importing it costs nothing. Everything else in the core works on the
:class:`~mmgap_core.store.base.VectorStore` and :class:`~mmgap_core.encoders.base.Encoder`
protocols.

Where a store lives (:func:`open_store`):

* embedded: a local folder (``chromadb.PersistentClient``), the default ``"mmgap-db"``;
* a Chroma server (``chroma run``, a distributed deployment, or a TLS/auth proxy in front of one):
  ``host=`` with ``port``, ``ssl``, ``verify``, ``auth`` and friends;
* Chroma Cloud: ``cloud=True``, the API key read from an environment variable;
* any :class:`~mmgap_core.store.connection.ChromaConnection`: ``connection=``.

Secrets are never arguments: they are named by environment variable (``MMGAP_CHROMA_TOKEN``,
``MMGAP_CHROMA_BASIC_AUTH``, ``CHROMA_API_KEY`` by default) and read when connecting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .encoders.base import Encoder
    from .engine import RetrievalEngine
    from .store.base import WritableVectorStore
    from .store.connection import ChromaConnection

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_MODEL",
    "DEFAULT_PRETRAINED",
    "StoreNotFoundError",
    "build_encoder",
    "check_device",
    "check_store_location",
    "encoder_args",
    "open_engine",
    "open_store",
    "weights_problem",
]

logger = logging.getLogger(__name__)

DEFAULT_DB = "mmgap-db"
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
#: How long the hub's host name may take to resolve before it counts as unreachable.
HUB_PROBE_SECONDS = 3.0
_CHROMA_DB_FILE = "chroma.sqlite3"
_MANIFEST_SUFFIX = "-mmgap"


class StoreNotFoundError(ValueError):
    """No mmgap store where one was asked for; raised by ``open_store(..., create=False)``.

    Read-only work (searching, calibrating, inspecting) opens stores this way, so that a mistyped
    folder or store name is reported instead of silently creating an empty store.
    """


# ---------------------------------------------------------------------------------- stores
def open_store(
    db=None,
    *,
    host: str | None = None,
    port: int | None = None,
    name: str = "mmgap",
    ssl: bool | None = None,
    verify: bool | str | os.PathLike = True,
    headers: Mapping[str, str] | None = None,
    header_env: Mapping[str, str] | None = None,
    auth: str | None = None,
    auth_env: str | None = None,
    token_header: str = "Authorization",
    username: str | None = None,
    tenant: str | None = None,
    database: str | None = None,
    cloud: bool = False,
    connection: ChromaConnection | None = None,
    create: bool = True,
) -> WritableVectorStore:
    """mmgap's own Chroma store: embedded in a folder, on a Chroma server, or on Chroma Cloud.

    Parameters
    ----------
    db : str or os.PathLike, optional
        Folder of the embedded store (``PersistentClient``); default ``"mmgap-db"``. Not together
        with ``host``, ``cloud`` or ``connection``.
    host : str, optional
        A Chroma server (or a proxy in front of one): connects with ``ChromaStore.http``.
    port : int, optional
        Its port: default 8000 on a server, 443 on Chroma Cloud.
    name : str, default "mmgap"
        Store name: collections are ``NAME-<modality>`` and ``NAME-mmgap``.
    ssl : bool, optional
        Speak HTTPS (default: only when ``verify`` names a CA bundle, or on Cloud).
    verify : bool or path, default True
        Check the server's certificate against the system's CAs (True), a CA bundle (a path), or
        not at all (False: tests only).
    headers, header_env : mapping of str to str, optional
        Extra HTTP headers; ``header_env`` maps a header to the environment variable holding its
        (secret) value.
    auth : {"token", "basic"}, optional
        Chroma's client auth provider; the secret is read from ``auth_env``.
    auth_env : str, optional
        Environment variable of the secret (default ``MMGAP_CHROMA_TOKEN``,
        ``MMGAP_CHROMA_BASIC_AUTH``, or ``CHROMA_API_KEY`` on Cloud).
    token_header : {"Authorization", "X-Chroma-Token"}, default "Authorization"
        Where a token travels.
    username : str, optional
        Basic auth: the user; ``auth_env`` then holds the password only.
    tenant, database : str, optional
        Chroma tenant and database.
    cloud : bool, default False
        Connect to Chroma Cloud (``ChromaStore.cloud``).
    connection : ChromaConnection, optional
        A prepared connection (``ChromaStore.connect``); no other connection option then.
    create : bool, default True
        False: open an existing store only, and raise :class:`StoreNotFoundError` (creating
        nothing, not even the folder) when there is none.

    Returns
    -------
    ChromaStore

    Raises
    ------
    StoreNotFoundError
        With ``create=False``, when no store ``name`` exists there.
    ValueError
        For contradictory options (a folder and a server, server options for a folder), a
        ``db`` path that is a file, or a non-empty folder that holds no Chroma store.
    StoreUnavailableError
        When the server cannot be reached (``StoreAuthError``, ``StoreTLSError``: credentials
        refused or missing, certificate not trusted).
    """
    from .store.chroma_store import ChromaStore

    remote = connection is not None or bool(cloud) or bool(host)
    if not remote:
        given = _server_options(
            port=port, ssl=ssl, verify=verify, headers=headers, header_env=header_env,
            auth=auth, auth_env=auth_env, token_header=token_header, username=username,
            tenant=tenant, database=database,
        )  # fmt: skip
        if given:
            raise ValueError(
                f"{', '.join(given)} apply to a Chroma server (host=) or Chroma Cloud "
                "(cloud=True), not to an embedded store"
            )
        return _open_embedded(ChromaStore, Path(db or DEFAULT_DB).expanduser(), name, create)
    if db is not None:
        raise ValueError("give a store folder (db) or a Chroma server (host/cloud), not both")
    options: dict[str, Any] = {
        "verify": verify,
        "headers": headers,
        "header_env": header_env,
    }
    if connection is not None:
        others = _server_options(
            host=host, port=port, ssl=ssl, verify=verify, headers=headers, header_env=header_env,
            auth=auth, auth_env=auth_env, token_header=token_header, username=username,
            tenant=tenant, database=database, cloud=cloud,
        )  # fmt: skip
        if others:
            raise ValueError(f"connection= is given: {', '.join(others)} must not be")
        conn = connection
    elif cloud:
        if host:
            options["host"] = host
        if port is not None:
            options["port"] = port
        if ssl is not None:
            options["ssl"] = ssl
        if auth not in (None, "token"):
            raise ValueError("Chroma Cloud authenticates with an API key: leave auth unset")
        from .store.connection import DEFAULT_CLOUD_ENV

        if create:
            return ChromaStore.cloud(
                name,
                tenant=tenant,
                database=database,
                api_key_env=auth_env or DEFAULT_CLOUD_ENV,
                **options,
            )
        conn = _connection(
            cloud=True, tenant=tenant, database=database,
            auth_env=auth_env or DEFAULT_CLOUD_ENV, **options,
        )  # fmt: skip
    else:
        options.update(
            ssl=ssl, auth=auth, auth_env=auth_env, token_header=token_header,
            username=username, tenant=tenant, database=database,
        )  # fmt: skip
        if create:
            return ChromaStore.http(host, 8000 if port is None else port, name, **options)
        conn = _connection(host=host, port=8000 if port is None else port, **options)
    if create:
        return ChromaStore.connect(conn, name)
    return _open_existing_remote(ChromaStore, conn, name)


def _server_options(**given: Any) -> list[str]:
    """Names of the server-only options in ``given`` that differ from their defaults."""
    defaults = {"verify": True, "token_header": "Authorization", "cloud": False}
    return [
        f"{key}="
        for key, value in given.items()
        if value not in (None, {}) and value != defaults.get(key, None)
    ]


def _connection(**fields: Any) -> ChromaConnection:
    from .store.connection import ChromaConnection

    return ChromaConnection(**{k: v for k, v in fields.items() if v is not None})


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


def _open_embedded(cls: Any, path: Path, name: str, create: bool) -> WritableVectorStore:
    """A store in the folder ``path``; checks the folder before Chroma may create anything."""
    from .store.chroma_client import check_store_name

    check_store_name(name)
    if not create:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{path} is a file, not a Chroma store folder")
        if not path.exists():
            raise StoreNotFoundError(f"no store at {path} (the folder does not exist)")
        if not (path / _CHROMA_DB_FILE).is_file():
            raise StoreNotFoundError(f"{path} is not a Chroma store folder (no {_CHROMA_DB_FILE})")
    else:
        check_store_location(path)
    import chromadb

    client = chromadb.PersistentClient(path=str(path))
    if not create:
        from .store.chroma_client import collection_exists

        if not collection_exists(client, name + _MANIFEST_SUFFIX):
            raise _missing_store(str(path), name, client)
    return cls(client, name)


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
    path = Path(db or DEFAULT_DB).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a Chroma store folder")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot make the store folder {path}: {parent} is not a folder")
    if path.is_dir() and not (path / _CHROMA_DB_FILE).is_file() and any(path.iterdir()):
        raise ValueError(
            f"{path} is a folder that holds other files and no Chroma store: give an empty or "
            "new folder for the store"
        )
    return path


def _open_existing_remote(cls: Any, conn: ChromaConnection, name: str) -> WritableVectorStore:
    from .store.chroma_client import check_store_name, collection_exists, connect
    from .store.chroma_client import translate_unavailable

    check_store_name(name)
    client = connect(conn)
    with translate_unavailable(client):
        if not collection_exists(client, name + _MANIFEST_SUFFIX):
            raise _missing_store(f"Chroma at {conn.address}", name, client)
    return cls(client, name)


# ---------------------------------------------------------------------------------- encoders
def encoder_args(
    spec: Mapping[str, Any] | None = None,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    model_config: str | None = None,
) -> dict[str, Any]:
    """What :func:`build_encoder` will build, settled without loading anything.

    Parameters
    ----------
    spec, model, pretrained, model_config
        As for :func:`build_encoder`.

    Returns
    -------
    dict
        ``{"kind": "simulated", "profile": ...}`` or ``{"kind": "open_clip", "model": ...,
        "pretrained": ..., "model_config": ...}``.

    Raises
    ------
    ValueError
        When the spec names local files that were not given again, saying which option names them.
    """
    spec = dict(spec or {})
    kind = spec.get("kind")
    if model is None and kind == "simulated":
        return {"kind": "simulated", "profile": spec.get("profile")}
    if spec and kind not in ("open_clip", "simulated"):
        logger.info("ignoring a recorded encoder of kind %r", kind)
    if model is None and kind == "open_clip":
        model = spec.get("model_name")
        if "weights_sha256" in spec:  # names and hashes: the user names local files again
            _require_local_files(spec, pretrained, model_config)
        pretrained = pretrained or spec.get("pretrained")
        model_config = model_config or spec.get("model_config")
    model = model or DEFAULT_MODEL
    if pretrained is None and model == DEFAULT_MODEL:
        pretrained = DEFAULT_PRETRAINED
    return {
        "kind": "open_clip",
        "model": model,
        "pretrained": pretrained,
        "model_config": model_config,
    }


def build_encoder(
    spec: Mapping[str, Any] | None = None,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    model_config: str | None = None,
    device: str | None = None,
) -> Encoder:
    """The encoder a recorded ``spec`` describes, with explicit arguments taking precedence.

    Parameters
    ----------
    spec : mapping, optional
        What ``encoder.spec()`` returned at index time (kept in the store's manifest):
        ``{"kind": "open_clip", "model_name", "pretrained", "model_config", "weights_sha256"}``, or
        ``{"kind": "simulated", "profile"}``. Other kinds are ignored.
    model, pretrained, model_config : str, optional
        Override the spec. ``model`` replaces the recorded model, and with it the recorded weights
        and config unless they are given too. Local files are recorded by name and content hash
        only, never by path: name them again here.
    device : str, optional
        Torch device (default: cuda, then mps, then cpu).

    Returns
    -------
    Encoder
        With neither a spec nor ``model``: open_clip ViT-B-32 with laion2b_s34b_b79k weights.

    Raises
    ------
    ValueError
        When the spec names local files that were not given again, saying which option names them.
    """
    args = encoder_args(spec, model=model, pretrained=pretrained, model_config=model_config)
    if args["kind"] == "simulated":
        from .simulator import SimulatedEncoder, SimulatorProfile

        profile = args["profile"]
        return SimulatedEncoder(
            SimulatorProfile(**profile) if isinstance(profile, dict) else profile
        )
    check_device(device)
    from .encoders.open_clip import OpenClipEncoder

    return OpenClipEncoder(
        args["model"], args["pretrained"], model_config=args["model_config"], device=device
    )


def check_device(device: str | None) -> None:
    """Raise ``ValueError`` when the torch ``device`` asked for is absent here (None: any).

    Parameters
    ----------
    device : str or None
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ...
    """
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a torch device ({exc})") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index or 0) >= n:
            raise ValueError(f"device {device!r} is not available here ({n} CUDA devices)")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r} is not available here (no MPS)")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: use cpu, cuda[:N] or mps")


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


# ---------------------------------------------------------------------------------- engines
def open_engine(
    db=None,
    *,
    host: str | None = None,
    port: int | None = None,
    name: str = "mmgap",
    model: str | None = None,
    pretrained: str | None = None,
    model_config: str | None = None,
    device: str | None = None,
    ssl: bool | None = None,
    verify: bool | str | os.PathLike = True,
    headers: Mapping[str, str] | None = None,
    header_env: Mapping[str, str] | None = None,
    auth: str | None = None,
    auth_env: str | None = None,
    token_header: str = "Authorization",
    username: str | None = None,
    tenant: str | None = None,
    database: str | None = None,
    cloud: bool = False,
    connection: ChromaConnection | None = None,
    **engine_options,
) -> RetrievalEngine:
    """Open a store and the encoder it was built with (recorded at index time) as an engine.

    Parameters
    ----------
    db, host, port, name, ssl, verify, headers, header_env, auth, auth_env, token_header,
    username, tenant, database, cloud, connection
        Where the store is and how to reach it, see :func:`open_store`.
    model, pretrained, model_config, device
        Override the recorded encoder, see :func:`build_encoder`. With neither recorded nor given,
        the default is ViT-B-32 / laion2b_s34b_b79k.
    **engine_options
        Passed to :class:`~mmgap_core.engine.RetrievalEngine`.

    Returns
    -------
    RetrievalEngine
    """
    from .engine import RetrievalEngine

    store = open_store(
        db, host=host, port=port, name=name, ssl=ssl, verify=verify, headers=headers,
        header_env=header_env, auth=auth, auth_env=auth_env, token_header=token_header,
        username=username, tenant=tenant, database=database, cloud=cloud, connection=connection,
    )  # fmt: skip
    spec = store.read_manifest().get("encoder")
    encoder = build_encoder(
        spec if isinstance(spec, Mapping) else None,
        model=model,
        pretrained=pretrained,
        model_config=model_config,
        device=device,
    )
    return RetrievalEngine(store, encoder, **engine_options)
