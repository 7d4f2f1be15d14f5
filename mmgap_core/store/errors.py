"""Errors the stores raise. Plain Python: importing this module loads neither numpy nor chromadb.

Every error here is a :class:`StoreUnavailableError` (a ``ConnectionError``) whose message is one
line naming the server's ``host:port``, so a command-line tool can print it as it is:

* :class:`StoreUnavailableError`: the server could not be reached;
* :class:`StoreAuthError`: it (or the proxy in front of it) refused the credentials, or the
  credentials were missing on this side;
* :class:`StoreTLSError`: the TLS handshake failed, most often because the server's certificate is
  not trusted.

No message ever contains a secret (token, password, API key): only the names of the environment
variables that hold them.

:func:`translate_error` maps what Chroma's HTTP client raised to one of these. The HTTP library
(httpx) and chromadb are recognised by their exception classes' names; neither is imported.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

__all__ = [
    "StoreAuthError",
    "StoreTLSError",
    "StoreUnavailableError",
    "transport_failure",
    "translate_error",
]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class StoreUnavailableError(ConnectionError):
    """The vector store's server could not be reached.

    Raised instead of the HTTP client's own transport errors (``httpx.ConnectError``,
    ``httpx.ReadError``, timeouts, ...) by every store call that talks to a Chroma server: when the
    server is not running, stops in the middle of a run, or the host or port is wrong. The original
    error is kept as ``__cause__``. The message is one line naming host and port, so a command-line
    tool can print it as it is.

    Parameters
    ----------
    host : str
        Host name or address of the server.
    port : int or None
        Its port, or ``None`` when unknown.
    reason : str, optional
        The transport error in a few words (for example ``"[Errno 111] Connection refused"``).
    hint : str, optional
        What to do about it; a default advice is used when empty.

    Attributes
    ----------
    host : str
    port : int or None
    reason : str
    hint : str
    """

    _default_hint = "check that it is running and reachable"

    def __init__(self, host: str, port: int | None, reason: str = "", hint: str = "") -> None:
        self.host = host
        self.port = port
        self.reason = _one_line(reason)
        self.hint = _one_line(hint) or self._default_hint
        message = self._summary()
        if self.reason:
            message += f" ({self.reason})"
        message += f"; {self.hint}"
        super().__init__(message)

    @property
    def address(self) -> str:
        """``"host:port"``, or the host alone when the port is unknown."""
        return f"{self.host}:{self.port}" if self.port is not None else str(self.host)

    def _summary(self) -> str:
        return f"Chroma server at {self.address} is unavailable"

    def __reduce__(self):
        # OSError pickles its args; rebuild from our own fields instead (multiprocessing, pickle).
        hint = "" if self.hint == self._default_hint else self.hint
        return (type(self), (self.host, self.port, self.reason, hint))


class StoreAuthError(StoreUnavailableError):
    """The Chroma server, or the reverse proxy in front of it, refused the credentials.

    Raised for an HTTP 401 or 403 answer (a wrong, expired or missing token, wrong basic-auth
    credentials, a tenant or database the credentials do not grant), and before connecting when the
    environment variable that should hold a secret is unset or empty. The message names the
    server and, in ``hint``, the environment variable to set; never the secret itself.
    """

    _default_hint = "check the credentials"

    def _summary(self) -> str:
        return f"Chroma server at {self.address}: authentication failed"


class StoreTLSError(StoreUnavailableError):
    """The TLS connection to the Chroma server failed.

    Most often the server's certificate is not trusted (self-signed, or signed by a private CA):
    the ``hint`` names the option that gives the CA bundle to trust (``verify=PATH`` of
    :class:`~mmgap_core.store.connection.ChromaConnection`). Also raised when one side speaks TLS
    and the other does not.
    """

    _default_hint = "give the CA bundle that signed the server's certificate (verify=PATH)"

    def _summary(self) -> str:
        return f"Chroma server at {self.address}: TLS connection failed"


# -- translating what the HTTP client raised ---------------------------------------------------
def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes/contexts, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def transport_failure(exc: BaseException) -> BaseException | None:
    """The HTTP transport error in ``exc``'s cause/context chain, else ``None``.

    httpx's transport errors (connect, read, write, protocol, timeout) all derive from
    ``httpx.TransportError``; chromadb's ``HttpClient`` constructor wraps them in a ``ValueError``
    ("Could not connect to a Chroma server"), hence the walk along the chain.
    """
    for err in _chain(exc):
        for cls in type(err).__mro__:
            if cls.__name__ == "TransportError" and cls.__module__.split(".")[0] == "httpx":
                return err
    return None


def _tls_failure(exc: BaseException) -> tuple[str, bool] | None:
    """The TLS failure in ``exc``'s chain in a few words, and whether the certificate was refused.

    A TLS stream cut short (EOF, reset) is an outage, not a TLS problem: ``None`` then.
    """
    for err in _chain(exc):
        if isinstance(err, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {err.verify_message or err.reason}", True
        if isinstance(err, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
            return None
        if isinstance(err, ssl.SSLError):
            return f"TLS error: {err.reason or err}", False
    return None


def _http_status(exc: BaseException) -> tuple[int, str] | None:
    """The HTTP status of an error answer in ``exc``'s chain, with the body's first bytes."""
    for err in _chain(exc):
        code = getattr(err, "code", None)
        if err.__class__.__module__.startswith("chromadb.errors") and callable(code):
            try:
                return int(code()), ""
            except Exception:  # noqa: BLE001 - a ChromaError without a usable code
                continue
        response = getattr(err, "response", None)
        if type(err).__name__ == "HTTPStatusError" and response is not None:
            return int(response.status_code), str(getattr(response, "text", ""))[:2000]
    return None


def translate_error(
    exc: BaseException, host: str, port: int | None, conn: Any = None
) -> StoreUnavailableError | None:
    """The store error that ``exc``, raised by a Chroma HTTP call, amounts to; ``None`` if none.

    Parameters
    ----------
    exc : BaseException
        What the Chroma call raised; its ``__cause__``/``__context__`` chain is searched.
    host : str
        The server's host, for the message.
    port : int or None
        Its port.
    conn : ChromaConnection, optional
        The connection the client was made from: its hints name the environment variable and
        the CA option to fix; generic advice without it.

    Returns
    -------
    StoreUnavailableError or None
        :class:`StoreTLSError` for an untrusted certificate or a TLS mismatch;
        :class:`StoreAuthError` for HTTP 401/403; :class:`StoreUnavailableError` for a transport
        failure, or a proxy's 502/503/504; ``None`` for anything else (a bad request, ...).
    """
    if isinstance(exc, StoreUnavailableError):
        return exc
    tls = _tls_failure(exc)
    if tls is not None:
        if not tls[1]:
            hint = "check that this port speaks TLS, or connect without ssl=True"
            return StoreTLSError(host, port, tls[0], hint)
        return StoreTLSError(host, port, tls[0], conn.tls_hint() if conn is not None else "")
    status = _http_status(exc)
    if status is not None and status[0] in (502, 503, 504):  # a proxy whose server is gone
        return StoreUnavailableError(
            host, port, f"HTTP {status[0]}", "check that the Chroma server behind it is running"
        )
    if status is not None and status[0] in (401, 403):
        reason = f"HTTP {status[0]}"
        if type(exc).__module__.startswith("chromadb.errors"):
            reason += f": {exc}"  # Chroma's own words (a tenant not granted, ...); no secret
        elif conn is not None and not conn.secret_env:
            reason += ", no credentials were sent"
        return StoreAuthError(host, port, reason, conn.auth_hint() if conn is not None else "")
    if status is not None and status[0] == 400 and "HTTPS port" in status[1]:
        return StoreTLSError(
            host, port, "the port expects TLS", "connect with ssl=True (CLI: --ssl)"
        )
    failure = transport_failure(exc)
    if failure is None:
        return None
    return StoreUnavailableError(host, port, str(failure) or type(failure).__name__)
