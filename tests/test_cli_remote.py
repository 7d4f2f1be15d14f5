"""Remote deployment from the command line: TLS, token and basic auth, headers, tenant, Cloud.

The end-to-end tests go through nginx (``tls_proxy``: TLS with a CA made here, a token check) in
front of a real ``chroma run`` server, all on 127.0.0.1; they skip, saying why, without nginx.
The mapping of the flags onto :func:`mmgap_core.factory.open_store` is checked without a server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from _fixtures_clip import model_args

from mmgap_core.cli import main

MMGAP = Path(sys.executable).parent / "mmgap"


def _mmgap(*argv, env) -> subprocess.CompletedProcess:
    if not MMGAP.exists():
        pytest.skip(f"the mmgap command is not installed next to {sys.executable}")
    return subprocess.run(
        [str(MMGAP), *map(str, argv)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
    )


@pytest.fixture(scope="module")
def proxied_store(tls_proxy, tiny_clip, tmp_path_factory, sample_images):
    """A calibrated store on the server behind the proxy, built through the CLI."""
    import shutil

    from mmgap_core.store.chroma_store import ChromaStore

    name = f"cli{uuid.uuid4().hex[:10]}"
    corpus = tmp_path_factory.mktemp("remote_corpus")
    for p in sample_images[:4]:
        shutil.copy(p, corpus / p.name)
    for i, text in enumerate(["a cat on a mat", "a cup of coffee", "a red rocket", "snow"]):
        (corpus / f"t{i}.txt").write_text(text, encoding="utf-8")
    conn = [
        "--host", tls_proxy.host, "--port", str(tls_proxy.port), "--ssl",
        "--ca-bundle", str(tls_proxy.ca_path), "--auth", "token", "--name", name,
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMGAP_CHROMA_TOKEN", tls_proxy.token)
        assert main(["index", str(corpus), "--quiet", *conn, *model_args(tiny_clip)]) == 0
        assert main(["calibrate", *conn]) == 0
    try:
        yield conn
    finally:
        server = tls_proxy.upstream_port
        import chromadb

        ChromaStore(chromadb.HttpClient(host="127.0.0.1", port=server), name).delete_store()


def test_search_through_the_tls_token_proxy(proxied_store, tls_proxy, tiny_clip):
    res = _mmgap(
        "search", "a cat", "-k", "3", *proxied_store, *model_args(tiny_clip),
        env={"MMGAP_CHROMA_TOKEN": tls_proxy.token},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "ranking for a text query" in res.stdout and res.stdout.count("(cos ") == 3
    assert tls_proxy.token not in res.stdout + res.stderr


def test_a_wrong_token_is_one_line(proxied_store, tls_proxy, tiny_clip):
    res = _mmgap("search", "a cat", *proxied_store, env={"MMGAP_CHROMA_TOKEN": "wrong-token"})
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "authentication failed" in lines[0] and f"{tls_proxy.port}" in lines[0]
    assert "MMGAP_CHROMA_TOKEN" in lines[0] and "wrong-token" not in lines[0]


def test_an_untrusted_certificate_is_one_line(proxied_store, tls_proxy):
    argv = list(proxied_store)
    argv[argv.index("--ca-bundle") + 1] = str(tls_proxy.other_ca_path)
    res = _mmgap("inspect", *argv, env={"MMGAP_CHROMA_TOKEN": tls_proxy.token})
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr
    assert "TLS" in res.stderr and "--ca-bundle" in res.stderr


@pytest.mark.parametrize(
    "extra, env",
    [
        (
            ["--auth", "token", "--token-header", "X-Chroma-Token"],
            {"MMGAP_CHROMA_TOKEN": "{token}"},
        ),
        (["--auth", "token", "--auth-env", "MY_TOKEN"], {"MY_TOKEN": "{token}"}),
        (["--auth", "basic", "--basic-user", "mmgap"], {"MMGAP_CHROMA_BASIC_AUTH": "{password}"}),
        (["--auth", "basic"], {"MMGAP_CHROMA_BASIC_AUTH": "{basic}"}),
        (["--header-env", "Authorization=PROXY_AUTH"], {"PROXY_AUTH": "Bearer {token}"}),
        (["--header", "X-Chroma-Token={token}"], {}),
    ],
    ids=["x-chroma-token", "auth-env", "basic-user", "basic", "header-env", "header"],
)
def test_other_ways_to_authenticate(proxied_store, tls_proxy, capsys, monkeypatch, extra, env):
    values = {
        "token": tls_proxy.token,
        "basic": tls_proxy.basic,
        "password": tls_proxy.basic.split(":", 1)[1],
    }
    monkeypatch.delenv("MMGAP_CHROMA_TOKEN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(**values))
    argv = list(proxied_store)
    i = argv.index("--auth")
    del argv[i : i + 2]
    extra = [e.format(**values) for e in extra]
    assert main(["inspect", "--sample", "2", "-k", "1", *argv, *extra]) == 0
    assert "modality share" in capsys.readouterr().out


def test_a_missing_secret_is_one_line_naming_the_variable(proxied_store, monkeypatch, capsys):
    monkeypatch.delenv("MMGAP_CHROMA_TOKEN", raising=False)
    assert main(["inspect", *proxied_store]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "MMGAP_CHROMA_TOKEN" in err


def test_the_tenant_and_database_flags_reach_chroma(proxied_store, tls_proxy, capsys, monkeypatch):
    monkeypatch.setenv("MMGAP_CHROMA_TOKEN", tls_proxy.token)
    assert main(["inspect", *proxied_store, "--tenant", "no_such_tenant"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--tenant" in err


# ---------------------------------------------------------------------------- flag mapping
class _Recorder:
    def __init__(self, monkeypatch):
        from mmgap_core.store.chroma_store import ChromaStore

        self.calls = []
        for kind in ("http", "cloud", "connect", "persistent"):
            monkeypatch.setattr(ChromaStore, kind, classmethod(self._record(kind)))

    def _record(self, kind):
        def record(cls, *args, **kwargs):
            self.calls.append((kind, args, kwargs))
            raise _Stop

        return record


class _Stop(Exception):
    pass


def _open(**kw):
    from mmgap_core.factory import open_store

    with pytest.raises(_Stop):
        open_store(**kw)


def test_open_store_maps_a_server(monkeypatch):
    rec = _Recorder(monkeypatch)
    _open(
        host="db.example", ssl=True, verify="/ca.pem", headers={"X-A": "1"},
        header_env={"X-B": "B_ENV"}, auth="basic", auth_env="PW", username="u",
        tenant="t", database="d", name="s",
    )  # fmt: skip
    kind, args, kwargs = rec.calls[-1]
    assert kind == "http" and args == ("db.example", 8000, "s")
    assert kwargs == {
        "ssl": True, "verify": "/ca.pem", "headers": {"X-A": "1"}, "header_env": {"X-B": "B_ENV"},
        "auth": "basic", "auth_env": "PW", "token_header": "Authorization", "username": "u",
        "tenant": "t", "database": "d",
    }  # fmt: skip


def test_open_store_maps_cloud(monkeypatch):
    rec = _Recorder(monkeypatch)
    _open(cloud=True, tenant="t", database="d", name="s")
    kind, args, kwargs = rec.calls[-1]
    assert kind == "cloud" and args == ("s",)
    assert kwargs["api_key_env"] == "CHROMA_API_KEY" and "host" not in kwargs
    assert "port" not in kwargs and kwargs["tenant"] == "t" and kwargs["database"] == "d"
    _open(cloud=True, auth_env="MY_KEY", host="h", port=9443, verify=False)
    kind, args, kwargs = rec.calls[-1]
    assert kwargs["api_key_env"] == "MY_KEY" and kwargs["host"] == "h" and kwargs["port"] == 9443
    assert kwargs["verify"] is False


def test_open_store_maps_a_connection(monkeypatch):
    from mmgap_core.store.connection import ChromaConnection

    rec = _Recorder(monkeypatch)
    conn = ChromaConnection(host="h", port=1234)
    _open(connection=conn, name="s")
    assert rec.calls[-1] == ("connect", (conn, "s"), {})


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"db": "x", "host": "h"}, "not both"),
        ({"ssl": True}, "ssl= apply to a Chroma server"),
        ({"auth": "token"}, "auth= apply"),
        ({"cloud": True, "auth": "basic"}, "API key"),
    ],
)
def test_open_store_refuses_contradictions(kw, message, tmp_path):
    from mmgap_core.factory import open_store

    with pytest.raises(ValueError, match=message):
        open_store(**kw)


def test_cli_flags_reach_the_factory(monkeypatch, capsys):
    import mmgap_core.factory as factory

    seen = {}

    def fake_open_store(**kw):
        seen.update(kw)
        raise factory.StoreNotFoundError("stop")

    monkeypatch.setattr(factory, "open_store", fake_open_store)
    argv = [
        "inspect", "--host", "h", "--port", "9000", "--ssl", "--ca-bundle", "/ca.pem",
        "--auth", "token", "--auth-env", "TOK", "--token-header", "X-Chroma-Token",
        "--header", "X-A=1", "--header", "X-B=2=3", "--header-env", "X-C=C_ENV",
        "--tenant", "t", "--database", "d", "--name", "s",
    ]  # fmt: skip
    assert main(argv) == 2
    assert seen == {
        "name": "s", "host": "h", "port": 9000, "ssl": True, "verify": "/ca.pem",
        "headers": {"X-A": "1", "X-B": "2=3"}, "header_env": {"X-C": "C_ENV"}, "auth": "token",
        "auth_env": "TOK", "token_header": "X-Chroma-Token", "username": None, "tenant": "t",
        "database": "d", "cloud": False, "create": False,
    }  # fmt: skip
    assert main(["inspect", "--host", "h", "--insecure"]) == 2
    assert seen["verify"] is False and seen["ssl"] is True and seen["port"] is None
