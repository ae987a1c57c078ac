"""Fixtures: real `python -m localpiston` subprocesses, one per configuration, shared per session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SECRET_VALUE = "s3cr3t-must-not-leak"


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/api/v2/connect"

    def execute(self, code: str | None = None, **body: object) -> requests.Response:
        payload: dict[str, object] = {"language": "python", "version": "*"}
        if code is not None:
            payload["files"] = [{"content": code}]
        payload.update(body)
        return requests.post(self.url + "/api/v2/execute", json=payload, timeout=60)

    def run(self, code: str, **body: object) -> dict[str, object]:
        response = self.execute(code, **body)
        assert response.status_code == 200, response.text
        run: dict[str, object] = response.json()["run"]
        return run

    def log(self) -> str:
        return self.log_path.read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(env_extra: dict[str, str], log_dir: Path) -> Server:
    port = free_port()
    env = {**os.environ, "SECRET": SECRET_VALUE, "DATABASE_URL": "postgres://leak", **env_extra}
    log_path = log_dir / f"localpiston-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "localpiston", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"localpiston exited: {log_path.read_text()}")
        try:
            if requests.get(url + "/api/v2/runtimes", timeout=1).status_code == 200:
                return Server(url, proc, log_path)
        except requests.RequestException:  # not listening yet, or too busy to answer within the second
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("localpiston did not start")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[dict[str, str]], Server]]:
    started: list[Server] = []
    log_dir = tmp_path_factory.mktemp("localpiston-logs")

    def factory(env: dict[str, str]) -> Server:
        server = start_server(env, log_dir)
        started.append(server)
        return server

    yield factory
    for server in started:
        stop_server(server)


@pytest.fixture(scope="session")
def piston(server_factory: Callable[[dict[str, str]], Server]) -> Server:
    """Default configuration (Piston's defaults)."""
    return server_factory({})


@pytest.fixture(scope="session")
def piston4(server_factory: Callable[[dict[str, str]], Server]) -> Server:
    """At most 4 concurrent jobs; python's run_timeout raised to 5000 by PISTON_LIMIT_OVERRIDES."""
    return server_factory({"PISTON_MAX_CONCURRENT_JOBS": "4", "PISTON_LIMIT_OVERRIDES": '{"python": {"run_timeout": 5000}}'})


@pytest.fixture(scope="session")
def piston1(server_factory: Callable[[dict[str, str]], Server]) -> Server:
    """A single job slot: the second job waits in the queue."""
    return server_factory({"PISTON_MAX_CONCURRENT_JOBS": "1"})


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A world-writable directory the sandbox user can write to (tmp_path lives under a 0700 dir)."""
    path = Path(tempfile.mkdtemp(prefix="lp-shared-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def netns_available() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0


def processes_with_marker(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(name))
    return found
