"""Remote Chroma: TLS, auth, tenant/database and CloudClient, through a real proxy to a real server.

Chroma 1.x's own server does not enforce auth, so deployments put it behind a reverse proxy that
terminates TLS and checks the token. ``tls_proxy`` is exactly that on 127.0.0.1: Debian's nginx
with a certificate signed by a CA made in the test, in front of ``chroma run``.
"""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
import traceback

import numpy as np
import pytest
from _fixtures_chroma import TLSProxy, _free_port

chromadb = pytest.importorskip("chromadb")

from mmgap_core.store.chroma_client import connect  # noqa: E402
from mmgap_core.store.chroma_store import ChromaStore  # noqa: E402
from mmgap_core.store.connection import (  # noqa: E402
    DEFAULT_BASIC_ENV,
    DEFAULT_CLOUD_ENV,
    DEFAULT_TOKEN_ENV,
    ChromaConnection,
)
from mmgap_core.store.errors import (  # noqa: E402
    StoreAuthError,
    StoreTLSError,
    StoreUnavailableError,
)

D = 8
server = pytest.mark.server


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _everything_said(err: BaseException) -> str:
    """The message, and the whole chained traceback a caller would see if it did not catch."""
    return str(err) + "".join(traceback.format_exception(err))


def _assert_one_line(err: BaseException, proxy) -> None:
    text = str(err)
    assert "\n" not in text and f"127.0.0.1:{proxy.port}" in text
    assert proxy.token not in _everything_said(err)


@pytest.fixture
def clean_env(monkeypatch):
    for name in (DEFAULT_TOKEN_ENV, DEFAULT_BASIC_ENV, DEFAULT_CLOUD_ENV, "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def remote_store(tls_proxy, clean_env, chroma_store_name):
    """Opens stores on the proxy with the right token; deletes them afterwards."""
    clean_env.setenv(DEFAULT_TOKEN_ENV, tls_proxy.token)
    opened: list[ChromaStore] = []

    def open_(**options):
        options.setdefault("verify", tls_proxy.ca_path)
        options.setdefault("auth", "token")
        store = ChromaStore.http("127.0.0.1", tls_proxy.port, chroma_store_name, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        try:
            store.delete_store()
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass


# -- the connection description (no server) ------------------------------------------------------
def test_connection_defaults_and_validation():
    c = ChromaConnection()
    assert (c.host, c.port, c.ssl, c.auth, c.auth_env) == ("127.0.0.1", 8000, False, None, None)
    c = ChromaConnection(verify="/etc/ca.pem", auth="TOKEN", token_header="x-chroma-token")
    assert c.ssl is True and c.auth == "token" and c.auth_env == DEFAULT_TOKEN_ENV
    assert c.token_header == "X-Chroma-Token" and c.url == "https://127.0.0.1:8000"
    assert ChromaConnection(auth="basic").auth_env == DEFAULT_BASIC_ENV
    cloud = ChromaConnection(cloud=True)
    assert (cloud.host, cloud.port, cloud.ssl, cloud.auth) == (
        "api.trychroma.com",
        443,
        True,
        "token",
    )
    assert (cloud.auth_env, cloud.token_header) == (DEFAULT_CLOUD_ENV, "X-Chroma-Token")
    bad = [
        dict(ssl=False, verify="/etc/ca.pem"),
        dict(auth="oauth"),
        dict(auth_env="MY_TOKEN"),
        dict(auth="token", auth_env="not a name"),
        dict(token_header="X-Api-Key"),
        dict(username="u"),
        dict(auth="basic", username="a:b"),
        dict(port=0),
        dict(port=True),
        dict(host=""),
        dict(headers={"bad name": "v"}),
        dict(headers={"X-A": "line\nbreak"}),
        dict(header_env={"X-A": "not-a-var"}),
        dict(cloud=True, auth="basic"),
        dict(verify=3),
        dict(tenant=""),
    ]
    for kw in bad:
        with pytest.raises(ValueError):
            ChromaConnection(**kw)
    assert hash(ChromaConnection(headers={"X-A": "b"})) == hash(ChromaConnection())


def test_connection_reads_secrets_from_env_and_never_shows_them(clean_env):
    clean_env.setenv(DEFAULT_TOKEN_ENV, "tok-SECRET-1")
    clean_env.setenv("MY_PROXY_KEY", "hdr-SECRET-2")
    c = ChromaConnection(
        host="db.example",
        verify="/etc/ca.pem",
        auth="token",
        headers={"X-Plain": "plain-SECRET-3"},
        header_env={"X-Api-Key": "MY_PROXY_KEY"},
        tenant="t",
        database="d",
    )
    assert c.credentials() == "tok-SECRET-1"
    assert c.secret_headers() == {"X-Api-Key": "hdr-SECRET-2"}
    assert c.secret_env == (DEFAULT_TOKEN_ENV, "MY_PROXY_KEY")
    shown = repr(c) + c.auth_hint() + c.tls_hint()
    assert "SECRET" not in shown
    assert DEFAULT_TOKEN_ENV in shown and "X-Plain" in shown and "/etc/ca.pem" in shown

    clean_env.delenv(DEFAULT_TOKEN_ENV)
    with pytest.raises(StoreAuthError) as info:
        c.credentials()
    assert DEFAULT_TOKEN_ENV in str(info.value) and "db.example:8000" in str(info.value)
    clean_env.setenv(DEFAULT_BASIC_ENV, "no-colon-SECRET")
    with pytest.raises(StoreAuthError) as info:
        ChromaConnection(auth="basic").credentials()
    assert "SECRET" not in str(info.value) and DEFAULT_BASIC_ENV in str(info.value)
    assert ChromaConnection(auth="basic", username="ann").credentials() == "ann:no-colon-SECRET"


def test_connection_module_does_not_import_chromadb():
    code = (
        "import sys, mmgap_core.store.connection\n"
        "assert 'chromadb' not in sys.modules and 'httpx' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ca_bundle_that_is_missing_or_not_pem(tmp_path):
    with pytest.raises(FileNotFoundError, match="CA bundle .* does not exist"):
        ChromaConnection(verify=tmp_path / "nope.pem").ssl_context()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="no usable PEM") as info:
        connect(ChromaConnection(verify=junk))
    assert "\n" not in str(info.value)


def test_auth_and_tls_errors_are_one_line_store_unavailable_errors_and_pickle():
    for cls in (StoreAuthError, StoreTLSError):
        err = cls("db.example", 8443, "HTTP\n401", "set the token in X_TOKEN")
        assert isinstance(err, StoreUnavailableError) and isinstance(err, ConnectionError)
        assert "\n" not in str(err) and "db.example:8443" in str(err) and "X_TOKEN" in str(err)
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is cls and str(again) == str(err) and again.hint == err.hint
    default = StoreTLSError("h", 1, "certificate verify failed")
    assert "verify=PATH" in str(default)
    assert str(pickle.loads(pickle.dumps(default))) == str(default)


# -- through nginx to `chroma run` ----------------------------------------------------------------
@server
@pytest.mark.parametrize("token_header", ["Authorization", "X-Chroma-Token"])
def test_right_token_works_end_to_end(remote_store, tls_proxy, token_header):
    store = remote_store(token_header=token_header)
    rng = np.random.default_rng(0)
    texts, images = _unit(rng.normal(size=(5, D))), _unit(rng.normal(size=(4, D)))
    store.add("text", [f"t{i}" for i in range(5)], texts, documents=[f"doc {i}" for i in range(5)])
    store.add("image", [f"i{i}" for i in range(4)], images, uris=[f"img{i}.png" for i in range(4)])
    assert store.counts() == {"image": 4, "text": 5}
    hits = store.query_per_modality(np.vstack([texts[2], images[3]]), 1)
    assert hits["text"].ids[0] == ["t2"] and hits["image"].ids[1] == ["i3"]
    assert hits["text"].documents[0] == ["doc 2"]
    np.testing.assert_allclose(hits["text"].scores[0, 0], 1.0, atol=1e-4)
    calibration = {"mu": {"text": [0.0] * D}, "count": 9}
    store.save_calibration(calibration)
    reopened = ChromaStore.http(
        "127.0.0.1",
        tls_proxy.port,
        store.name,
        verify=tls_proxy.ca_path,
        auth="token",
        token_header=token_header,
    )
    assert reopened.load_calibration() == calibration
    # No secret, and no local path, in what the store keeps or shows.
    manifest = json.dumps(reopened.read_manifest())
    for shown in (manifest, repr(store), repr(reopened)):
        assert tls_proxy.token not in shown and str(tls_proxy.ca_path) not in shown


@server
def test_basic_auth_and_secret_header(remote_store, tls_proxy, clean_env):
    clean_env.setenv(DEFAULT_BASIC_ENV, tls_proxy.basic)
    store = remote_store(auth="basic")
    store.add("text", ["a"], _unit(np.eye(D)[:1]))
    assert store.count("text") == 1
    user, password = tls_proxy.basic.split(":")
    clean_env.setenv("PW_ONLY", password)
    assert remote_store(auth="basic", username=user, auth_env="PW_ONLY").count("text") == 1
    # A plain header read from the environment (no Chroma auth provider).
    clean_env.setenv("PROXY_TOKEN", tls_proxy.token)
    plain = remote_store(auth=None, header_env={"X-Chroma-Token": "PROXY_TOKEN"})
    assert plain.count("text") == 1


@server
@pytest.mark.parametrize("case", ["wrong token", "no auth", "env unset", "wrong basic"])
def test_wrong_or_missing_token_gives_one_line(tls_proxy, clean_env, chroma_store_name, case):
    options = {"verify": tls_proxy.ca_path, "auth": "token"}
    if case == "wrong token":
        clean_env.setenv(DEFAULT_TOKEN_ENV, tls_proxy.token[:-1] + "x")
    elif case == "no auth":
        options["auth"] = None
    elif case == "wrong basic":
        clean_env.setenv(DEFAULT_BASIC_ENV, "mmgap:wrong")
        options["auth"] = "basic"
    with pytest.raises(StoreAuthError) as info:
        ChromaStore.http("127.0.0.1", tls_proxy.port, chroma_store_name, **options)
    _assert_one_line(info.value, tls_proxy)
    for sent in (tls_proxy.token[:-1] + "x", "mmgap:wrong"):
        assert sent not in _everything_said(info.value)
    expected = {
        "wrong token": (
            f"HTTP 401); set the right token in the environment variable {DEFAULT_TOKEN_ENV}"
        ),
        "no auth": "no credentials were sent",
        "env unset": f"environment variable {DEFAULT_TOKEN_ENV} is not set",
        "wrong basic": f"'user:password' in the environment variable {DEFAULT_BASIC_ENV}",
    }[case]
    assert expected in str(info.value)


@server
def test_token_refused_mid_run_gives_one_line(remote_store, tls_proxy):
    store = remote_store()
    store.add("text", ["a"], _unit(np.eye(D)[:1]))
    session = getattr(getattr(store.client, "_server", None), "_session", None)
    if session is None:
        pytest.skip("this chromadb keeps its HTTP session elsewhere")
    session.headers["Authorization"] = "Bearer revoked"
    with pytest.raises(StoreAuthError) as info:
        store.count("text")
    _assert_one_line(info.value, tls_proxy)
    assert DEFAULT_TOKEN_ENV in str(info.value)


@server
@pytest.mark.parametrize("trust", ["system store", "other CA"])
def test_untrusted_certificate_gives_one_line(tls_proxy, clean_env, chroma_store_name, trust):
    clean_env.setenv(DEFAULT_TOKEN_ENV, tls_proxy.token)
    verify = True if trust == "system store" else tls_proxy.other_ca_path
    with pytest.raises(StoreTLSError) as info:
        ChromaStore.http(
            "127.0.0.1", tls_proxy.port, chroma_store_name, ssl=True, verify=verify, auth="token"
        )
    _assert_one_line(info.value, tls_proxy)
    assert "certificate verify failed" in str(info.value)
    assert "verify=" in str(info.value) and "--ca-bundle" in str(info.value)


@server
def test_plain_http_to_the_tls_port_says_use_ssl(tls_proxy, clean_env, chroma_store_name):
    clean_env.setenv(DEFAULT_TOKEN_ENV, tls_proxy.token)
    with pytest.raises(StoreTLSError, match="ssl=True") as info:
        ChromaStore.http("127.0.0.1", tls_proxy.port, chroma_store_name, auth="token")
    _assert_one_line(info.value, tls_proxy)


@server
def test_tls_to_a_plain_port_and_a_proxy_without_server(chroma_server, tmp_path, clean_env):
    with pytest.raises(StoreTLSError, match="without ssl=True") as info:
        ChromaStore.http(chroma_server.host, chroma_server.port, "probe", ssl=True)
    assert "\n" not in str(info.value) and f":{chroma_server.port}" in str(info.value)
    # A proxy whose Chroma server is gone answers 502: an outage, named by the proxy's address.
    proxy = TLSProxy(tmp_path, upstream_port=_free_port())
    proxy.start()
    try:
        clean_env.setenv(DEFAULT_TOKEN_ENV, proxy.token)
        with pytest.raises(StoreUnavailableError, match="HTTP 502") as info:
            ChromaStore.http("127.0.0.1", proxy.port, "probe", verify=proxy.ca_path, auth="token")
        assert type(info.value) is StoreUnavailableError
        _assert_one_line(info.value, proxy)
    finally:
        proxy.stop()
    assert not proxy.running


@server
def test_system_trust_store_is_used_by_default(remote_store, tls_proxy, clean_env):
    # The system store honours SSL_CERT_FILE: put the test CA there, and verify=True trusts it.
    clean_env.setenv("SSL_CERT_FILE", str(tls_proxy.ca_path))
    store = remote_store(ssl=True, verify=True)
    assert store.modalities() == []


@server
def test_verify_false_connects_and_warns(remote_store, caplog):
    with caplog.at_level(logging.WARNING, logger="mmgap_core.store.connection"):
        store = remote_store(ssl=True, verify=False)
    assert store.modalities() == []
    assert "verification is OFF" in caplog.text


@server
def test_secrets_never_reach_the_logs(remote_store, tls_proxy, caplog):
    with caplog.at_level(logging.DEBUG):
        store = remote_store()
        store.add("text", ["a"], _unit(np.eye(D)[:1]))
        store.query("text", np.eye(D)[0], 1)
    assert caplog.records and tls_proxy.token not in caplog.text


@server
def test_cloud_client_through_the_proxy(tls_proxy, clean_env, chroma_store_name):
    options = dict(host="127.0.0.1", port=tls_proxy.port, verify=tls_proxy.ca_path)
    with pytest.raises(StoreAuthError, match=f"{DEFAULT_CLOUD_ENV} is not set"):
        ChromaStore.cloud(chroma_store_name, **options)
    clean_env.setenv(DEFAULT_CLOUD_ENV, "wrong-key")
    with pytest.raises(StoreAuthError, match="HTTP 401") as info:
        ChromaStore.cloud(chroma_store_name, **options)
    assert "wrong-key" not in _everything_said(info.value)
    clean_env.setenv(DEFAULT_CLOUD_ENV, tls_proxy.token)
    store = ChromaStore.cloud(
        chroma_store_name, tenant="default_tenant", database="default_database", **options
    )
    try:
        store.add("text", ["a"], _unit(np.eye(D)[:1]))
        assert store.count("text") == 1
        assert tls_proxy.token not in json.dumps(store.read_manifest())
    finally:
        store.delete_store()


@server
def test_tenant_and_database(remote_store, tls_proxy, chroma_server, clean_env, chroma_store_name):
    from chromadb.config import Settings

    admin = chromadb.AdminClient(
        Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI",
            chroma_server_host=chroma_server.host,
            chroma_server_http_port=chroma_server.port,
        )
    )
    tenant, database = f"{chroma_store_name}-tenant", f"{chroma_store_name}-db"
    admin.create_tenant(tenant)
    admin.create_database(database, tenant=tenant)
    store = remote_store(tenant=tenant, database=database)
    store.add("text", ["a"], _unit(np.eye(D)[:1]))
    default = remote_store()
    assert store.modalities() == ["text"] and default.modalities() == []
    with pytest.raises(ValueError, match="check tenant= and database=") as info:
        remote_store(tenant=tenant, database="missing-db")
    assert "\n" not in str(info.value)
