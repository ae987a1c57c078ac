"""The real web process (`python -m ingress`, gunicorn) against a real Postgres, over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from ingress.body import DRAIN_FLOOR_BYTES
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


# A body over MAX_BODY_BYTES (256 KiB by default) that clients write in full before reading the answer.
BIG_PROMPT_CHARS = 4 * 1024 * 1024

# Node's http module, as axios in Next.js uses it: writes the whole body, then reads the answer.
# argv: url, file, "length" (Content-Length) or "chunked" (no Content-Length), content type.
NODE_POST = r"""
const http = require("http");
const fs = require("fs");
const [url, file, framing, type] = process.argv.slice(1);
const body = fs.readFileSync(file);
const headers = {"Content-Type": type};
if (framing === "length") headers["Content-Length"] = body.length;
const req = http.request(url, {method: "POST", headers}, (res) => {
  let text = "";
  res.setEncoding("utf8");
  res.on("data", (c) => { text += c; });
  res.on("end", () => { console.log(JSON.stringify({status: res.statusCode, body: text})); });
});
req.on("error", (e) => { console.log(JSON.stringify({error: e.code || e.message})); });
if (framing === "length") { req.end(body); }
else { for (let i = 0; i < body.length; i += 65536) req.write(body.subarray(i, i + 65536)); req.end(); }
"""


def post_with_curl(url: str, path: Path, framing: str, content_type: str) -> tuple[int, str]:
    chunked = ["-H", "Transfer-Encoding: chunked"] if framing == "chunked" else []
    result = subprocess.run(
        ["curl", "-sS", "-X", "POST", url, "-H", f"Content-Type: {content_type}", *chunked,
         "--data-binary", f"@{path}", "-w", "\n%{http_code}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"curl failed ({result.returncode}): {result.stderr}"
    text, _, status = result.stdout.rpartition("\n")
    return int(status), text


def post_with_urllib(url: str, path: Path, framing: str, content_type: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    data = path.read_bytes()
    headers = {"Content-Type": content_type}
    body: Any = data
    if framing == "chunked":  # an iterable with Transfer-Encoding set: http.client sends it chunked
        headers["Transfer-Encoding"] = "chunked"
        body = iter([data[i:i + 65536] for i in range(0, len(data), 65536)])
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def post_with_node(url: str, path: Path, framing: str, content_type: str) -> tuple[int, str]:
    result = subprocess.run(["node", "-e", NODE_POST, url, str(path), framing, content_type],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert "error" not in out, f"node's http saw {out['error']} instead of an answer"
    return int(out["status"]), str(out["body"])


CLIENTS = {"curl": post_with_curl, "urllib": post_with_urllib, "node": post_with_node}


@pytest.fixture
def big_body(conn: psycopg.Connection, tmp_path: Path) -> tuple[f.World, Path]:
    w = f.world(conn)
    path = tmp_path / "body.json"
    path.write_text(json.dumps({**w.invoke_body(), "prompt": "p" * BIG_PROMPT_CHARS}))
    return w, path


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_body_over_max_body_bytes_gets_a_413_every_client_reads_and_queues_nothing(
    server: WebProcess, conn: psycopg.Connection, big_body: tuple[f.World, Path], client: str, framing: str,
) -> None:
    w, path = big_body
    status, text = CLIENTS[client](server.url + w.invoke_path, path, framing, "application/json")
    assert (status, json.loads(text)["error"]) == (413, "body_too_large"), text
    assert rows_for(conn, w.job_id) == []


def test_big_body_with_the_wrong_content_type_gets_a_415_urllib_reads(
    server: WebProcess, conn: psycopg.Connection, big_body: tuple[f.World, Path],
) -> None:
    w, path = big_body
    status, text = post_with_urllib(server.url + w.invoke_path, path, "length", "text/plain")
    assert (status, json.loads(text)["error"]) == (415, "unsupported_media_type"), text
    assert rows_for(conn, w.job_id) == []


def test_body_declared_past_the_drain_limit_is_answered_413_without_being_read(
    server: WebProcess, conn: psycopg.Connection,
) -> None:
    # Past DRAIN_FLOOR_BYTES the ingress does not read the body at all: a client that reads while it
    # sends (this one sends nothing) gets the 413 at once; one still writing may see a reset (README).
    w = f.world(conn)
    http = HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        http.putrequest("POST", w.invoke_path)
        http.putheader("Content-Type", "application/json")
        http.putheader("Content-Length", str(DRAIN_FLOOR_BYTES + 1))
        http.endheaders()  # headers only: not one byte of the body is sent
        resp = http.getresponse()
        assert (resp.status, json.loads(resp.read())["error"]) == (413, "body_too_large")
    finally:
        http.close()
    assert rows_for(conn, w.job_id) == []
