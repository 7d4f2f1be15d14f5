"""Chroma clients and collections: construction, lookup, names, distance space, batch size, errors.

Every other Chroma module goes through these helpers to get a collection, so two rules hold
everywhere:

* Only Chroma's "collection does not exist" error means a collection is absent. Any other error
  (a bad request, a server fault) propagates unchanged.
* A transport failure of Chroma's HTTP client (connection refused, server gone mid-request,
  timeout) becomes one :class:`~mmgap_core.store.errors.StoreUnavailableError` naming host and
  port; an untrusted certificate or other TLS failure a
  :class:`~mmgap_core.store.errors.StoreTLSError`; an HTTP 401 or 403 (from the server or a proxy
  in front of it) a :class:`~mmgap_core.store.errors.StoreAuthError`
  (:func:`~mmgap_core.store.errors.translate_error`).

Remote clients are made by :func:`connect` from a
:class:`~mmgap_core.store.connection.ChromaConnection`; secrets go only into Chroma's own client
settings, never into a log line or an error message.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import chromadb
from chromadb.config import DEFAULT_DATABASE, DEFAULT_TENANT, Settings
from chromadb.errors import NotFoundError

from mmgap_core.store.connection import ChromaConnection
from mmgap_core.store.errors import StoreUnavailableError, translate_error

__all__ = [
    "MANIFEST_SUFFIX",
    "check_modality",
    "check_store_name",
    "collection_exists",
    "collection_space",
    "connect",
    "find_collection",
    "get_collection",
    "http_client",
    "is_not_found",
    "max_batch",
    "translate_unavailable",
    "unavailable_error",
    "unavailable_guard",
]

logger = logging.getLogger(__name__)

#: Suffix of a store's manifest collection: ``f"{name}-{MANIFEST_SUFFIX}"``.
MANIFEST_SUFFIX = "mmgap"
DEFAULT_WRITE_BATCH = 1000

# Chroma's collection-name rule: 3-512 chars of [a-zA-Z0-9._-], alphanumeric at both ends, no "..".
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_MAX_NAME = 512
_MIN_NAME = 3

F = TypeVar("F", bound=Callable[..., Any])

_TOKEN_PROVIDER = "chromadb.auth.token_authn.TokenAuthClientProvider"
_BASIC_PROVIDER = "chromadb.auth.basic_authn.BasicAuthClientProvider"
# The connection each remote client was made from, for the hints of its later errors.
_CONNECTIONS: weakref.WeakKeyDictionary[Any, ChromaConnection] = weakref.WeakKeyDictionary()


# -- names -----------------------------------------------------------------------------------------
def check_store_name(name: object) -> str:
    """Return ``name`` if it is a valid store name, else raise ``ValueError``.

    Parameters
    ----------
    name : object
        The proposed store name; the store's collections are ``f"{name}-{modality}"`` and
        ``f"{name}-mmgap"``, so it follows Chroma's collection-name rule.

    Returns
    -------
    str
        ``name`` unchanged.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"invalid store name {name!r}: use letters, digits, '.', '_' or '-', starting and "
            "ending with a letter or digit, without '..' (Chroma's collection-name rule)"
        )
    if len(name) + 1 + len(MANIFEST_SUFFIX) > _MAX_NAME:
        raise ValueError(f"store name {name[:40]!r}... is too long for Chroma collection names")
    return name


def check_modality(name: str, modality: object) -> str:
    """Return ``modality`` if it is a valid modality label of store ``name``, else ``ValueError``.

    Parameters
    ----------
    name : str
        The store name.
    modality : object
        The proposed label; ``"mmgap"`` is reserved for the manifest.

    Returns
    -------
    str
        ``modality`` unchanged.
    """
    if not isinstance(modality, str) or not _NAME_RE.match(modality) or ".." in modality:
        raise ValueError(
            f"invalid modality label {modality!r}: use letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit, without '..'"
        )
    if modality == MANIFEST_SUFFIX:
        raise ValueError(f"modality label {modality!r} is reserved for the store manifest")
    if len(name) + 1 + len(modality) > _MAX_NAME:
        raise ValueError(
            f"modality label {modality[:40]!r} makes collection name longer than {_MAX_NAME} chars"
        )
    return modality


def _is_valid_collection_name(name: str) -> bool:
    return _MIN_NAME <= len(name) <= _MAX_NAME and bool(_NAME_RE.match(name)) and ".." not in name


# -- errors ----------------------------------------------------------------------------------------
def is_not_found(exc: BaseException) -> bool:
    """True when ``exc`` is Chroma's "collection does not exist" error.

    chromadb 1.x raises ``chromadb.errors.NotFoundError``; 0.x raised a ``ValueError`` whose
    message says the collection "does not exist".
    """
    return isinstance(exc, NotFoundError) or (
        isinstance(exc, ValueError) and "does not exist" in str(exc)
    )


def _client_address(client: Any) -> tuple[str, int | None]:
    try:
        settings = client.get_settings()
        host = settings.chroma_server_host or "localhost"
        port = settings.chroma_server_http_port
        return str(host), None if port is None else int(port)
    except Exception:  # noqa: BLE001 - a client without settings: the address stays unknown
        return "unknown host", None


def unavailable_error(client: Any, exc: BaseException) -> StoreUnavailableError | None:
    """The :class:`StoreUnavailableError` that ``exc`` amounts to, or ``None`` if it is no outage.

    Parameters
    ----------
    client : chromadb client
        The client whose call raised ``exc``; its settings name host and port.
    exc : BaseException
        The error raised by a Chroma call.

    Returns
    -------
    StoreUnavailableError or None
        A :class:`StoreTLSError` for a TLS failure, a :class:`StoreAuthError` for an HTTP 401 or
        403, a plain :class:`StoreUnavailableError` for a transport failure.
    """
    if isinstance(exc, StoreUnavailableError):
        return exc
    host, port = _client_address(client)
    try:
        conn = _CONNECTIONS.get(client)
    except TypeError:  # an unhashable client object
        conn = None
    return translate_error(exc, host, port, conn)


@contextmanager
def translate_unavailable(client: Any) -> Iterator[None]:
    """Context manager: a transport failure inside becomes :class:`StoreUnavailableError`."""
    try:
        yield
    except StoreUnavailableError:
        raise
    except Exception as exc:
        err = unavailable_error(client, exc)
        if err is None:
            raise
        logger.debug("Chroma call failed: %r", exc)
        raise err from exc


def unavailable_guard(method: F) -> F:
    """Decorate a method of an object with a ``_client``: outages raise StoreUnavailableError.

    Works for plain methods and generator methods (the error surfaces while iterating). The plain
    case is a bare ``try`` around the call: free when nothing is raised.
    """
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def gen_wrapper(self, *args, **kwargs):
            with translate_unavailable(getattr(self, "_client", None)):
                yield from method(self, *args, **kwargs)

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except StoreUnavailableError:
            raise
        except Exception as exc:
            err = unavailable_error(getattr(self, "_client", None), exc)
            if err is None:
                raise
            logger.debug("Chroma call failed: %r", exc)
            raise err from exc

    return wrapper  # type: ignore[return-value]


# -- clients ---------------------------------------------------------------------------------------
def connect(connection: ChromaConnection) -> Any:
    """A Chroma client for ``connection``: ``chromadb.HttpClient``, or ``chromadb.CloudClient``.

    TLS verification goes through Chroma's ``chroma_server_ssl_verify`` setting (an
    ``ssl.SSLContext`` built by :meth:`ChromaConnection.ssl_context`); credentials through Chroma's
    own client auth settings (``chroma_client_auth_provider``, ``chroma_client_auth_credentials``,
    ``chroma_auth_token_transport_header``), read from the environment only here.

    Parameters
    ----------
    connection : ChromaConnection
        Where and how to connect.

    Returns
    -------
    chromadb client
        Connected: Chroma checks tenant and database when the client is made.

    Raises
    ------
    StoreUnavailableError
        When nothing answers at ``connection.address``.
    StoreAuthError
        When a secret's environment variable is unset, or the server or a proxy answers 401/403.
    StoreTLSError
        When the server's certificate is not trusted, or TLS is spoken on one side only.
    FileNotFoundError, ValueError
        For a CA bundle that does not exist or holds no certificate; a tenant or database that
        does not exist.
    """
    host, port = str(connection.host), int(connection.port or 0)
    settings = Settings()
    ctx = connection.ssl_context()
    if ctx is not None:
        # httpx takes the context as it is; a path string would be deprecated there.
        settings.chroma_server_ssl_verify = ctx
    headers = {**connection.headers, **connection.secret_headers()}
    credentials = connection.credentials()
    logger.debug("connecting to Chroma at %r", connection)
    try:
        if connection.cloud:
            if headers:
                settings.chroma_server_headers = headers
            client = chromadb.CloudClient(
                tenant=connection.tenant,
                database=connection.database,
                api_key=credentials,
                settings=settings,
                cloud_host=host,
                cloud_port=port,
                enable_ssl=bool(connection.ssl),
            )
        else:
            if credentials is not None:
                basic = connection.auth == "basic"
                settings.chroma_client_auth_provider = _BASIC_PROVIDER if basic else _TOKEN_PROVIDER
                settings.chroma_client_auth_credentials = credentials
                if not basic:
                    settings.chroma_auth_token_transport_header = connection.token_header
            client = chromadb.HttpClient(
                host=host,
                port=port,
                ssl=bool(connection.ssl),
                headers=headers or None,
                settings=settings,
                tenant=connection.tenant or DEFAULT_TENANT,
                database=connection.database or DEFAULT_DATABASE,
            )
    except Exception as exc:
        err = translate_error(exc, host, port, connection)
        if err is None and is_not_found(exc):  # Chroma checks tenant and database on connect
            raise ValueError(
                f"Chroma at {connection.address}: {' '.join(str(exc).split())} "
                "(check tenant= and database=; CLI: --tenant, --database)"
            ) from exc
        if err is None:
            raise
        logger.debug("connecting to Chroma at %s failed: %s", connection.address, err)
        raise err from exc
    _CONNECTIONS[client] = connection
    return client


def http_client(host: str, port: int) -> Any:
    """A plain-HTTP client to ``host:port``: :func:`connect` without TLS or auth."""
    return connect(ChromaConnection(host=host, port=port))


def max_batch(client: Any) -> int:
    """Largest number of items one write may carry on ``client`` (a default if it cannot say)."""
    getter = getattr(client, "get_max_batch_size", None)
    if getter is None:
        return DEFAULT_WRITE_BATCH
    try:
        size = int(getter())
    except Exception as exc:  # noqa: BLE001 - a server without pre-flight checks
        if unavailable_error(client, exc) is not None:
            raise
        return DEFAULT_WRITE_BATCH
    return size if size > 0 else DEFAULT_WRITE_BATCH


# -- collections -----------------------------------------------------------------------------------
def find_collection(client: Any, name: str) -> Any | None:
    """The collection ``name`` (no embedding function), or ``None`` if Chroma says it doesn't exist.

    Any other error propagates; an outage raises :class:`StoreUnavailableError`.
    """
    with translate_unavailable(client):
        try:
            return client.get_collection(name, embedding_function=None)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise


def get_collection(client: Any, name: str) -> Any:
    """The collection ``name`` (no embedding function), or ``ValueError`` listing existing ones."""
    col = find_collection(client, name)
    if col is None:
        with translate_unavailable(client):
            names = sorted(c.name for c in client.list_collections())
        raise ValueError(f"Chroma collection {name!r} not found (existing: {names[:20]})")
    return col


def collection_exists(client: Any, name: str) -> bool:
    """True when collection ``name`` exists. A name Chroma could never accept is simply absent."""
    if not _is_valid_collection_name(name):
        return False
    return find_collection(client, name) is not None


def collection_space(collection: Any) -> str:
    """Distance space of a collection: ``"cosine"``, ``"l2"`` or ``"ip"`` (Chroma's default l2)."""
    try:
        config = collection.configuration_json or {}
    except Exception:  # noqa: BLE001 - older/foreign clients may lack it
        config = {}
    for index in ("hnsw", "spann"):
        space = (config.get(index) or {}).get("space")
        if space:
            return str(space)
    space = (collection.metadata or {}).get("hnsw:space")
    return str(space) if space else "l2"
