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

from .factory_checks import (
    StoreNotFoundError,
    _missing_store,
    _require_local_files,
    check_store_location,
    weights_problem,
)

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
_CHROMA_DB_FILE = "chroma.sqlite3"
_MANIFEST_SUFFIX = "-mmgap"


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

    server_only = {
        "port": port, "ssl": ssl, "verify": verify, "headers": headers, "header_env": header_env,
        "auth": auth, "auth_env": auth_env, "token_header": token_header, "username": username,
        "tenant": tenant, "database": database,
    }  # fmt: skip
    remote = connection is not None or bool(cloud) or bool(host)
    if not remote:
        given = _server_options(**server_only)
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
        others = _server_options(host=host, **server_only, cloud=cloud)
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
