"""How to reach a remote Chroma: :class:`ChromaConnection` (server, proxy in front of one, Cloud).

Plain Python: importing this module loads neither numpy nor chromadb, so a command line can build a
connection before anything heavy is imported. The client itself is made by
:func:`mmgap_core.store.chroma_client.connect`.

Secrets are never held by a connection: it names the environment variables that hold them (a
token, ``user:password`` for basic auth, a Chroma Cloud API key, secret header values), and they
are read only when connecting. So ``repr()`` of a connection, log lines and error messages can name
the variables but never contain the values, and nothing of a connection is written to a store's
manifest.

Environment variables read by default:

==========================  ================================================================
``MMGAP_CHROMA_TOKEN``      token for ``auth="token"``
``MMGAP_CHROMA_BASIC_AUTH`` ``user:password`` (or only the password with ``username=``) for
                            ``auth="basic"``
``CHROMA_API_KEY``          Chroma Cloud API key (``cloud=True``), as Chroma itself names it
==========================  ================================================================
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from mmgap_core.store.errors import StoreAuthError

__all__ = [
    "AUTH_KINDS",
    "CLOUD_HOST",
    "DEFAULT_BASIC_ENV",
    "DEFAULT_CLOUD_ENV",
    "DEFAULT_TOKEN_ENV",
    "TOKEN_HEADERS",
    "ChromaConnection",
]

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_ENV = "MMGAP_CHROMA_TOKEN"
DEFAULT_BASIC_ENV = "MMGAP_CHROMA_BASIC_AUTH"
DEFAULT_CLOUD_ENV = "CHROMA_API_KEY"
CLOUD_HOST = "api.trychroma.com"
#: ``auth=`` values: Chroma's token and basic client auth providers.
AUTH_KINDS = ("token", "basic")
#: Headers Chroma's token provider can carry the token in (``Authorization: Bearer`` or its own).
TOKEN_HEADERS = ("Authorization", "X-Chroma-Token")

_DEFAULT_HOST = "127.0.0.1"
_DEFAULT_PORT = 8000
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Verify = Union[bool, str, os.PathLike]


def _check_env_name(label: str, name: object) -> str:
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        raise ValueError(f"{label} must name an environment variable, got {name!r}")
    return name


def _check_headers(label: str, headers: object) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ValueError(f"{label} must be a mapping of header name to value")
    out: dict[str, str] = {}
    for key, value in headers.items():
        if not isinstance(key, str) or not _HEADER_NAME.match(key):
            raise ValueError(f"{label}: invalid HTTP header name {key!r}")
        # Values are never echoed: they may be secrets.
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise ValueError(f"{label}[{key!r}] must be a one-line string")
        out[key] = value
    return out


@dataclass(frozen=True, repr=False)
class ChromaConnection:
    """How to connect to a Chroma server (``chroma run``, a distributed deployment) or Chroma Cloud.

    Frozen and free of secrets: credentials are named by environment variable and read at connect
    time (:meth:`credentials`, :meth:`secret_headers`).

    Parameters
    ----------
    host : str, optional
        Server host (or a full ``http(s)://`` URL, as Chroma accepts). Default ``"127.0.0.1"``;
        ``"api.trychroma.com"`` with ``cloud=True``.
    port : int, optional
        Server port. Default 8000; 443 with ``cloud=True``.
    ssl : bool, optional
        Speak HTTPS. Default ``False``, but ``True`` when ``verify`` is a path or ``cloud=True``.
    verify : bool or path, default True
        How to check the server's certificate: ``True`` against the system's trust store (the
        ``SSL_CERT_FILE``/``SSL_CERT_DIR`` variables are honoured), a path to a PEM CA bundle (or a
        folder of hashed CA certificates) to trust instead, ``False`` not at all (logged as a
        warning; never do this outside a test).
    headers : mapping of str to str, optional
        Extra HTTP headers sent with every request, for a proxy in front of the server.
        Their values are not secret-safe in code: put secret values in ``header_env``.
    header_env : mapping of str to str, optional
        Extra headers whose values are read from environment variables:
        ``{"X-Api-Key": "MY_PROXY_KEY"}`` sends ``X-Api-Key: $MY_PROXY_KEY``.
    auth : {"token", "basic"}, optional
        Chroma's own client auth: ``"token"`` (``TokenAuthClientProvider``) or ``"basic"``
        (``BasicAuthClientProvider``). ``None``: no auth provider.
    auth_env : str, optional
        Environment variable holding the secret. Default ``MMGAP_CHROMA_TOKEN`` for a token,
        ``MMGAP_CHROMA_BASIC_AUTH`` for basic auth, ``CHROMA_API_KEY`` with ``cloud=True``.
    token_header : {"Authorization", "X-Chroma-Token"}, default "Authorization"
        Where the token travels: ``Authorization: Bearer <token>`` or ``X-Chroma-Token: <token>``
        (Chroma's ``chroma_auth_token_transport_header``). Chroma Cloud always uses the latter.
    username : str, optional
        Basic auth only: the user name, the environment variable then holds only the password.
        Without it the variable holds ``user:password``.
    tenant, database : str, optional
        Chroma tenant and database. Default Chroma's ``default_tenant`` and ``default_database``
        on a server; inferred from the API key on Chroma Cloud.
    cloud : bool, default False
        Connect with ``chromadb.CloudClient`` (API-key auth, TLS).

    Raises
    ------
    ValueError
        For inconsistent or malformed settings.
    """

    host: str | None = None
    port: int | None = None
    ssl: bool | None = None
    verify: Verify = True
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    header_env: Mapping[str, str] = field(default_factory=dict, hash=False)
    auth: str | None = None
    auth_env: str | None = None
    token_header: str = "Authorization"
    username: str | None = None
    tenant: str | None = None
    database: str | None = None
    cloud: bool = False

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        cloud = bool(self.cloud)
        put("cloud", cloud)
        host = self.host if self.host is not None else (CLOUD_HOST if cloud else _DEFAULT_HOST)
        if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host):
            raise ValueError(f"host must be a non-empty host name or address, got {host!r}")
        put("host", host)
        port = self.port if self.port is not None else (443 if cloud else _DEFAULT_PORT)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
        put("port", port)

        verify = self.verify
        if not isinstance(verify, bool):
            if not isinstance(verify, (str, os.PathLike)) or not os.fspath(verify):
                raise ValueError(f"verify must be True, False or a CA bundle path, got {verify!r}")
            verify = os.fspath(verify)
        put("verify", verify)
        use_ssl = self.ssl
        if use_ssl is None:
            use_ssl = cloud or isinstance(verify, str)
        elif not use_ssl and isinstance(verify, str):
            raise ValueError("verify names a CA bundle but ssl=False: a CA is only used with TLS")
        put("ssl", bool(use_ssl))

        put("headers", _check_headers("headers", self.headers))
        header_env = _check_headers("header_env", self.header_env)
        for key, env in header_env.items():
            _check_env_name(f"header_env[{key!r}]", env)
        put("header_env", header_env)

        auth = self.auth.lower() if isinstance(self.auth, str) else self.auth
        if cloud:
            if auth not in (None, "token"):
                raise ValueError("Chroma Cloud authenticates with an API key: leave auth unset")
            auth = "token"
        elif auth is not None and auth not in AUTH_KINDS:
            raise ValueError(f"auth must be one of {AUTH_KINDS} or None, got {self.auth!r}")
        put("auth", auth)
        if auth is None:
            if self.auth_env is not None:
                raise ValueError("auth_env is given but auth is not: set auth='token' or 'basic'")
        else:
            default = {"token": DEFAULT_TOKEN_ENV, "basic": DEFAULT_BASIC_ENV}[auth]
            env = self.auth_env or (DEFAULT_CLOUD_ENV if cloud else default)
            put("auth_env", _check_env_name("auth_env", env))
        header = "X-Chroma-Token" if cloud else self.token_header
        matches = [
            h for h in TOKEN_HEADERS if isinstance(header, str) and h.lower() == header.lower()
        ]
        if not matches:
            raise ValueError(f"token_header must be one of {TOKEN_HEADERS}, got {header!r}")
        put("token_header", matches[0])
        if self.username is not None and (auth != "basic" or not isinstance(self.username, str)):
            raise ValueError("username is for auth='basic' only, and must be a string")
        if self.username is not None and (":" in self.username or not self.username):
            raise ValueError("username must be non-empty and contain no ':'")
        for name in ("tenant", "database"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")

    # -- description (never a secret) -------------------------------------------------------------
    @property
    def address(self) -> str:
        """``"host:port"``, as error messages name the server."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http(s)://host:port`` (no credentials)."""
        if "://" in str(self.host):
            return str(self.host)
        return f"{'https' if self.ssl else 'http'}://{self.address}"

    @property
    def secret_env(self) -> tuple[str, ...]:
        """Names of the environment variables this connection reads secrets from."""
        names = [self.auth_env] if self.auth_env else []
        return tuple(names + [v for v in self.header_env.values() if v not in names])

    def __repr__(self) -> str:
        parts = [f"host={self.host!r}", f"port={self.port}", f"ssl={self.ssl}"]
        if self.ssl:
            parts.append(f"verify={self.verify!r}")
        if self.headers:  # names only: a value may be a secret put here by mistake
            parts.append(f"headers=<{', '.join(sorted(self.headers))}>")
        if self.header_env:
            parts.append(f"header_env={dict(self.header_env)!r}")
        if self.auth:
            parts.append(f"auth={self.auth!r}, auth_env={self.auth_env!r}")
            if self.auth == "token" and not self.cloud:
                parts.append(f"token_header={self.token_header!r}")
            if self.username:
                parts.append(f"username={self.username!r}")
        for name in ("tenant", "database"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name)!r}")
        if self.cloud:
            parts.append("cloud=True")
        return f"ChromaConnection({', '.join(parts)})"

    def auth_hint(self) -> str:
        """Advice for a refused or missing credential: names the variable, never its value."""
        if self.cloud:
            return f"set the Chroma Cloud API key in the environment variable {self.auth_env}"
        if self.auth == "token":
            return (
                f"set the right token in the environment variable {self.auth_env} "
                f"(sent as {self.token_header})"
            )
        if self.auth == "basic":
            what = "the password" if self.username else "'user:password'"
            return f"set {what} in the environment variable {self.auth_env}"
        if self.header_env:
            return f"check the header values in {', '.join(self.secret_env)}"
        return (
            "the server needs credentials: connect with auth='token' and the token in "
            f"the environment variable {DEFAULT_TOKEN_ENV} (CLI: --auth token)"
        )

    def tls_hint(self) -> str:
        """Advice for an untrusted certificate: names the CA option."""
        if isinstance(self.verify, str):
            return (
                f"the CA bundle {self.verify} (verify=) does not trust the server's certificate; "
                "give the CA that signed it (CLI: --ca-bundle PATH)"
            )
        return (
            "give the CA bundle that signed the server's certificate with verify=PATH "
            "(CLI: --ca-bundle PATH)"
        )

    # -- secrets, read at connect time ------------------------------------------------------------
    def _secret(self, env: str, what: str) -> str:
        value = os.environ.get(env, "").strip()
        if not value:
            raise StoreAuthError(
                self.host or "", self.port, f"no {what}: environment variable {env} is not set"
            )
        return value

    def credentials(self) -> str | None:
        """The secret for Chroma's client auth provider, read from ``auth_env`` (``None``: no auth).

        Returns
        -------
        str or None
            The token or API key, or ``user:password`` for basic auth.

        Raises
        ------
        StoreAuthError
            When the variable is unset or empty, or basic credentials lack the ``user:`` part.
        """
        if self.auth is None or self.auth_env is None:
            return None
        what = "API key" if self.cloud else {"token": "token", "basic": "credentials"}[self.auth]
        value = self._secret(self.auth_env, what)
        if self.auth == "basic":
            if self.username is not None:
                return f"{self.username}:{value}"
            if ":" not in value:
                raise StoreAuthError(
                    self.host or "",
                    self.port,
                    f"environment variable {self.auth_env} must hold 'user:password'",
                    "or give username= and only the password in the variable",
                )
        return value

    def secret_headers(self) -> dict[str, str]:
        """The ``header_env`` headers with their values read from the environment."""
        return {
            key: self._secret(env, f"value for header {key}")
            for key, env in self.header_env.items()
        }

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context checking the server's certificate as ``verify`` says (``None``: no TLS).

        Raises
        ------
        FileNotFoundError
            When ``verify`` names a path that does not exist.
        ValueError
            When that file holds no usable PEM certificate.
        """
        if not self.ssl:
            return None
        if self.verify is False:
            logger.warning("TLS certificate verification is OFF for %s", self.address)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        if self.verify is True:
            ctx = ssl.create_default_context()
            if not ctx.cert_store_stats().get("x509_ca"):
                try:  # a Python without the OS store wired in (python.org macOS builds)
                    import certifi

                    ctx.load_verify_locations(cafile=certifi.where())
                except ImportError:  # pragma: no cover - httpx depends on certifi
                    pass
            return ctx
        path = Path(str(self.verify)).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"CA bundle {path} (verify=) does not exist")
        try:
            if path.is_dir():
                return ssl.create_default_context(capath=str(path))
            return ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"CA bundle {path} (verify=) holds no usable PEM certificate "
                f"({exc.__class__.__name__})"
            ) from None
