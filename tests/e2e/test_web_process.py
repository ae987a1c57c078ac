"""The real web process (`python -m ingress`, gunicorn) against a real Postgres, over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from tests import factories as f
from tests import pg

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 20
STOP_TIMEOUT_S = 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_env(**settings: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PORT", "WEB_CONCURRENCY", "WEB_THREADS"}}
    env.update({"WEB_CONCURRENCY": "2", "WEB_THREADS": "4", "LOG_FORMAT": "json", "LOG_LEVEL": "warning"})
    for key, value in settings.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class WebProcess:
    """`python -m ingress` on a free port; output goes to a file so a full pipe cannot block it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingress", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"web process exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or listening while the worker still boots
                pass
            time.sleep(0.05)
        raise AssertionError(f"web process not healthy after {START_TIMEOUT_S}s:\n{self.output()}")

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                raise AssertionError(f"web process ignored SIGTERM for {STOP_TIMEOUT_S}s:\n{self.output()}") from None
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server_db(pg_server_url: str, template_name: str) -> Iterator[str]:
    name, url = pg.create_from_template(pg_server_url, template_name)
    yield url
    pg.drop(pg_server_url, name)


@pytest.fixture(scope="module")
def server(server_db: str) -> Iterator[WebProcess]:
    web = WebProcess(process_env(DATABASE_URL=server_db, DB_POOL_MAX="8"))
    try:
        web.wait_healthy()
        yield web
    finally:
        web.stop()


@pytest.fixture
def conn(server_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(server_db, autocommit=True, row_factory=dict_row) as c:
        yield c


def rows_for(conn: psycopg.Connection, job_id: str) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM agent_hub.invocation_outbox WHERE job_id = %s", (job_id,)).fetchall()


def test_nextjs_post_gets_202_then_200_and_one_row(server: WebProcess, conn: psycopg.Connection) -> None:
    w = f.world(conn)
    url = server.url + w.invoke_path
    # What axios sends: the JSON body with an explicit Content-Type.
    first = requests.post(url, json=w.invoke_body(), headers={"Content-Type": "application/json"}, timeout=10)
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["jobId"] == w.job_id
    assert body["status"] == "queued"

    again = requests.post(url, json=w.invoke_body(), timeout=10)
    assert again.status_code == 200
    assert again.json() == body

    rows = rows_for(conn, w.job_id)
    assert len(rows) == 1
    assert rows[0]["id"] == body["invocationId"]
    assert (rows[0]["prompt"], rows[0]["session_id"], rows[0]["user_id"], rows[0]["agent_id"]) == (
        w.prompt, w.session_id, w.user_id, w.agent_id,
    )


def test_eight_simultaneous_posts_through_gunicorn_queue_once(server: WebProcess, conn: psycopg.Connection) -> None:
    w = f.world(conn)
    url = server.url + w.invoke_path
    barrier = threading.Barrier(8)
    results: list[requests.Response | None] = [None] * 8

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = requests.post(url, json=w.invoke_body(), timeout=15)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    statuses = sorted(r.status_code for r in results if r is not None)
    assert statuses == [200] * 7 + [202]
    assert len({r.json()["invocationId"] for r in results if r is not None}) == 1
    assert len(rows_for(conn, w.job_id)) == 1


def test_errors_over_http_are_json_and_write_nothing(server: WebProcess, conn: psycopg.Connection) -> None:
    w = f.world(conn)
    missing = requests.post(server.url + w.invoke_path, json={**w.invoke_body(), "prompt": None}, timeout=10)
    assert (missing.status_code, missing.json()["error"], missing.json()["field"]) == (400, "missing_field", "prompt")
    unknown = requests.post(f"{server.url}/api/agents/{f.new_id()}/invoke", json=w.invoke_body(), timeout=10)
    assert (unknown.status_code, unknown.json()["error"]) == (404, "agent_not_found")
    route = requests.get(f"{server.url}/nowhere", timeout=10)
    assert (route.status_code, route.headers["Content-Type"], route.json()["error"]) == (404, "application/json", "not_found")
    assert rows_for(conn, w.job_id) == []


def test_readyz_is_200_on_the_migrated_database(server: WebProcess) -> None:
    resp = requests.get(f"{server.url}/readyz", timeout=10)
    assert (resp.status_code, resp.json()) == (200, {"status": "ready"})


def test_sigterm_stops_the_process_cleanly(server_db: str) -> None:
    web = WebProcess(process_env(DATABASE_URL=server_db, WEB_CONCURRENCY="1"))
    web.wait_healthy()
    started = time.monotonic()
    assert web.stop() == 0
    assert time.monotonic() - started < STOP_TIMEOUT_S
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{web.url}/healthz", timeout=2)


def test_process_starts_and_answers_503_while_the_database_is_down() -> None:
    web = WebProcess(process_env(DATABASE_URL="postgresql://postgres@127.0.0.1:1/x", DB_POOL_TIMEOUT="0.5", WEB_CONCURRENCY="1"))
    try:
        web.wait_healthy()
        resp = requests.post(
            f"{web.url}/api/agents/a1/invoke", json={"sessionId": "s", "jobId": "j", "userId": "u", "prompt": "p"}, timeout=10,
        )
        assert (resp.status_code, resp.json()["error"]) == (503, "database_unavailable")
    finally:
        assert web.stop() == 0


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        ({"DATABASE_URL": None}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/db", "DB_POOL_MIN": "9", "DB_POOL_MAX": "2"}, "DB_POOL_MIN"),
        ({"DATABASE_URL": "postgresql://u@h/db", "WEB_CONCURRENCY": "many"}, "WEB_CONCURRENCY"),
    ],
)
def test_bad_configuration_exits_non_zero_with_one_clear_line(settings: dict[str, str | None], variable: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ingress", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=REPO, env=process_env(**settings), capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ingress: configuration error: ")
    assert variable in lines[0]
