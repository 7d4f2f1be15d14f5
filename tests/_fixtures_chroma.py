"""Chroma fixtures: a real ``chroma run`` server (session) and a client per backend kind.

``chroma_client`` is parametrized over a local ``PersistentClient`` and an ``HttpClient`` to the
server; the http param carries ``pytest.mark.server`` so ``-m "not server"`` skips the server.
"""

from __future__ import annotations

import os
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
]

_HOST = "127.0.0.1"  # loopback only, ever
_START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_HOST, 0))
        return int(s.getsockname()[1])


class ChromaServer:
    """A ``chroma run`` process on 127.0.0.1 with a persistent path; restartable in place."""

    def __init__(self, path: Path, port: int | None = None) -> None:
        self.host = _HOST
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
            pytest.fail(f"`chroma` console script not found next to the interpreter: {exe}")
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
                pytest.fail(
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
        pytest.fail(
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

    def restart(self) -> None:
        """Stop and start again on the same path and port (data must survive)."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


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
