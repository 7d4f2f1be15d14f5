"""Chroma fixtures: a real ``chroma run`` server (session) and a client per backend kind.

``chroma_client`` is parametrized over a local ``PersistentClient`` and an ``HttpClient`` to the
server; the http param carries ``pytest.mark.server`` so ``-m "not server"`` skips the server.

``tls_proxy`` puts nginx (Debian's package) in front of the session's server, the way real
deployments secure Chroma: it terminates TLS with a certificate signed by a CA made here with
``openssl``, and refuses requests without the right token. Without nginx or openssl the tests that
use it skip and say why.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

__all__ = [
    "ChromaServer",
    "chroma_client",
    "chroma_server",
    "chroma_store_name",
    "engine",
    "store",
    "TLSProxy",
    "private_chroma_server",
    "tls_proxy",
]

_HOST = "127.0.0.1"  # loopback only, ever
_START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_HOST, 0))
        return int(s.getsockname()[1])


class _Process:
    """A child process held in ``self._proc``: stopped (terminate, then kill) and polled."""

    _proc: subprocess.Popen | None = None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


class ChromaServer(_Process):
    """A ``chroma run`` process on 127.0.0.1 with a persistent path; restartable in place."""

    def __init__(self, path: Path, port: int | None = None, *, fail=None) -> None:
        self.host = _HOST
        # How a failed start is reported: pytest.fail here; benchmarks/_common.py raises SystemExit.
        self._fail = fail or pytest.fail
        self.port = port or _free_port()
        self.path = Path(path)
        self._proc: subprocess.Popen | None = None
        self._log_dir = self.path.parent / f"{self.path.name}-logs"
        self._starts = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self):
        """A fresh ``chromadb.HttpClient`` to this server."""
        import chromadb

        return chromadb.HttpClient(host=self.host, port=self.port)

    def start(self) -> None:
        import chromadb

        exe = Path(sys.executable).parent / "chroma"
        if not exe.exists():
            self._fail(f"`chroma` console script not found next to the interpreter: {exe}")
        self.path.mkdir(parents=True, exist_ok=True)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._starts += 1
        out = open(self._log_dir / f"stdout-{self._starts}.log", "wb")  # noqa: SIM115
        err = open(self._log_dir / f"stderr-{self._starts}.log", "wb")  # noqa: SIM115
        env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
        cmd = [
            str(exe),
            "run",
            "--path",
            str(self.path),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        out.close()
        err.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._fail(
                    f"`chroma run` exited early with code {self._proc.returncode}:\n"
                    f"{self._stderr()}"
                )
            # A bare connect first: building an HttpClient per poll costs CPU the starting
            # server needs on a 2-core machine.
            if not self._port_open():
                time.sleep(0.05)
                continue
            try:
                chromadb.HttpClient(host=self.host, port=self.port).heartbeat()
                return
            except Exception as exc:  # noqa: BLE001 - listening but not serving yet
                last = exc
                time.sleep(0.1)
        self.stop()
        self._fail(
            f"`chroma run` gave no heartbeat within {_START_TIMEOUT_S:.0f} s ({last!r}):\n"
            f"{self._stderr()}"
        )

    def _port_open(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _stderr(self) -> str:
        log = self._log_dir / f"stderr-{self._starts}.log"
        return log.read_text(errors="replace")[-4000:] if log.exists() else "(no stderr)"

    def restart(self) -> None:
        """Stop and start again on the same path and port (data must survive)."""
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real ``chroma run`` server on 127.0.0.1, started once per session."""
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_chroma_server(tmp_path):
    """A ``chroma run`` server of the test's own, which the test may stop (outage tests)."""
    server = ChromaServer(tmp_path / "private-chroma")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(chroma_client, chroma_store_name):
    """A ``ChromaStore`` on ``chroma_client`` (embedded and server), under a fresh name."""
    from mmgap_core.store import ChromaStore

    return ChromaStore(chroma_client, chroma_store_name)


@pytest.fixture
def engine(store, tiny_encoder):
    """A ``RetrievalEngine`` over ``store`` with the tiny encoder."""
    from mmgap_core.engine import RetrievalEngine

    return RetrievalEngine(store, tiny_encoder)


@pytest.fixture
def chroma_store_name() -> str:
    """A store name unique to the test, so tests sharing a server do not collide."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(
    params=["persistent", pytest.param("http", marks=pytest.mark.server)],
)
def chroma_client(request, tmp_path):
    """A Chroma client: ``PersistentClient`` on a tmp dir, or ``HttpClient`` to ``chroma_server``.

    On the server, collections the test created are deleted afterwards.
    """
    import chromadb

    if request.param == "persistent":
        client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
        try:
            yield client
        finally:
            client.close()
        return
    server = request.getfixturevalue("chroma_server")
    if not server.running:  # a failed restart in an earlier test
        server.start()
    client = server.client()
    before = {c.name for c in client.list_collections()}
    try:
        yield client
    finally:
        if server.running:
            for col in server.client().list_collections():
                if col.name not in before:
                    try:
                        client.delete_collection(col.name)
                    except Exception:  # noqa: BLE001 - best-effort cleanup
                        pass


# -- nginx: TLS and a token check in front of `chroma run` ----------------------------------------
_NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    client_max_body_size 0;
    server {{
        listen {host}:{port} ssl;
        ssl_certificate {dir}/server.pem;
        ssl_certificate_key {dir}/server.key;
        location / {{
            set $authorized 0;
            if ($http_authorization = "Bearer {token}") {{ set $authorized 1; }}
            if ($http_x_chroma_token = "{token}") {{ set $authorized 1; }}
            if ($http_authorization = "Basic {basic}") {{ set $authorized 1; }}
            if ($authorized = 0) {{ return 401; }}
            proxy_pass http://{host}:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
_SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
"""


def _tool(name: str) -> str | None:
    """Path of a system tool; nginx lives in /usr/sbin, often not on a user's PATH."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


class TLSProxy(_Process):
    """nginx on 127.0.0.1 in front of a Chroma server: TLS, and a check of the credentials.

    A request passes with ``Authorization: Bearer <token>``, ``X-Chroma-Token: <token>`` or
    ``Authorization: Basic <user:password>``; any other gets nginx's own 401. nginx runs in the
    foreground as a child process (``daemon off; master_process off``) with its prefix, config,
    pid, logs and temp folders in ``workdir``, on a free loopback port.

    Attributes
    ----------
    ca_path : Path
        The CA that signed the proxy's certificate (trust it with ``verify=ca_path``).
    other_ca_path : Path
        An unrelated CA: trusting only it leaves the proxy's certificate untrusted.
    token, basic : str
        The accepted token, and the accepted ``user:password``.
    """

    def __init__(self, workdir: Path, upstream_port: int) -> None:
        self.host = _HOST
        self.port = _free_port()
        self.upstream_port = upstream_port
        self.dir = Path(workdir)
        self.token = secrets.token_hex(16)
        self.basic = f"mmgap:{secrets.token_hex(8)}"
        self.ca_path = self.dir / "ca.pem"
        self.other_ca_path = self.dir / "other-ca.pem"
        self._proc: subprocess.Popen | None = None

    def _openssl(self, *args: str) -> None:
        subprocess.run([self._openssl_exe, *args], cwd=self.dir, check=True, capture_output=True)

    def _make_ca(self, name: str) -> None:
        self._openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", f"/CN=mmgap test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    def make_certificates(self) -> None:
        """A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA."""
        self._make_ca("ca")
        self._make_ca("other-ca")
        (self.dir / "server.ext").write_text(_SERVER_EXT)
        self._openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        )  # fmt: skip
        self._openssl(
            "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-set_serial", "1", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
        )  # fmt: skip

    @staticmethod
    def require_tools() -> tuple[str, str]:
        """Paths of nginx and openssl; skips the test, saying why, if one is missing."""
        nginx, openssl = _tool("nginx"), _tool("openssl")
        if nginx is None or openssl is None:
            missing = " and ".join(n for n, p in (("nginx", nginx), ("openssl", openssl)) if not p)
            pytest.skip(f"{missing} not installed (apt-get install nginx openssl; .ci/run does)")
        return nginx, openssl

    def start(self) -> None:
        nginx, self._openssl_exe = self.require_tools()
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        self.make_certificates()
        basic = base64.b64encode(self.basic.encode()).decode()
        conf = _NGINX_CONF.format(
            dir=self.dir,
            host=self.host,
            port=self.port,
            upstream=self.upstream_port,
            token=self.token,
            basic=basic,
        )
        (self.dir / "nginx.conf").write_text(conf)
        log = self.dir / "error.log"
        cmd = [nginx, "-e", str(log), "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")]
        out = open(self.dir / "stdout.log", "wb")  # noqa: SIM115
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                text = log.read_text(errors="replace") if log.exists() else ""
                text += (self.dir / "stdout.log").read_text(errors="replace")
                pytest.fail(f"nginx exited early with code {self._proc.returncode}:\n{text}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("nginx did not listen within 15 s")


@pytest.fixture(scope="session")
def tls_proxy(request, tmp_path_factory):
    """nginx terminating TLS and checking a token in front of ``chroma_server`` (session-wide).

    Skips, saying why, when nginx or openssl is not installed (before starting any server).
    """
    TLSProxy.require_tools()
    server = request.getfixturevalue("chroma_server")
    proxy = TLSProxy(tmp_path_factory.mktemp("nginx"), server.port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
