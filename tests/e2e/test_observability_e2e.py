"""Observability, end to end: the hub_events channel and the dispatcher's /metrics.

A LISTEN connection on ``hub_events`` sees every ChatMessage the dispatcher writes and every Job
status change it makes, announced right after the write commits; the dispatcher's /metrics reports
the runs by outcome and the outbox gauges read from Postgres.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from tests.integration.localpiston_proc import free_port
from tests.stack import Stack, agent_with_code

TWO_MESSAGES = "import hub\nhub.send_message('one')\nhub.set_progress(50)\nhub.send_message('two')\n"
FAILS = "import hub\nhub.send_message('about to fail')\nraise SystemExit(4)\n"


class Listener:
    """LISTEN hub_events on its own connection, collecting the payloads."""

    def __init__(self, db_url: str) -> None:
        self.conn = psycopg.connect(db_url, autocommit=True)
        self.conn.execute("LISTEN hub_events")
        self.events: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for note in self.conn.notifies(timeout=0.2):
                self.events.append(json.loads(note.payload))

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("job_id") == job_id]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.conn.close()


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def stack(module_db_url: str, metrics_port: int) -> Iterator[Stack]:
    s = Stack(module_db_url, dispatcher_env={"PISTON_TRANSPORT": "ws", "DISPATCHER_METRICS_PORT": str(metrics_port)}).start()
    yield s
    s.close()


@pytest.fixture(scope="module")
def listener(stack: Stack) -> Iterator[Listener]:
    lst = Listener(stack.db_url)
    yield lst
    lst.close()


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)


def test_hub_events_announce_each_agent_message_and_each_job_status_change(
    stack: Stack, listener: Listener, tmp_path: Path
) -> None:
    with stack.connect() as conn:
        w = agent_with_code(conn, tmp_path, TWO_MESSAGES)
    assert stack.post(w).status_code == 202
    job = stack.wait_job(w.job_id)
    assert job["status"] == "SUCCEEDED", job["errorMessage"]
    wait_for(lambda: len(listener.for_job(w.job_id)) >= 4)
    events = listener.for_job(w.job_id)
    with stack.connect() as c:
        ids = [r["id"] for r in c.execute(
            'SELECT "id" FROM "ChatMessage" WHERE "sessionId" = %s AND "role" = \'agent\' ORDER BY "timestamp"',
            (w.session_id,)).fetchall()]
    assert events == [
        {"kind": "status", "job_id": w.job_id, "session_id": w.session_id, "status": "PROCESSING"},
        {"kind": "message", "job_id": w.job_id, "session_id": w.session_id, "message_id": ids[0]},
        {"kind": "message", "job_id": w.job_id, "session_id": w.session_id, "message_id": ids[1]},
        {"kind": "status", "job_id": w.job_id, "session_id": w.session_id, "status": "SUCCEEDED"},
    ]


def test_hub_events_announce_a_failed_job(stack: Stack, listener: Listener, tmp_path: Path) -> None:
    with stack.connect() as conn:
        w = agent_with_code(conn, tmp_path, FAILS)
    assert stack.post(w).status_code == 202
    assert stack.wait_job(w.job_id)["status"] == "FAILED"
    wait_for(lambda: len(listener.for_job(w.job_id)) >= 3)
    assert [e.get("status") or e["kind"] for e in listener.for_job(w.job_id)] == ["PROCESSING", "message", "FAILED"]


def sample(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name + (("{" + labels + "}") if labels else "")) + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.M)
    assert match, f"{name}{{{labels}}} not in:\n{text}"
    return float(match.group(1))


def test_dispatcher_metrics_count_runs_by_outcome_and_read_the_outbox(
    stack: Stack, metrics_port: int, tmp_path: Path
) -> None:
    before = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    ok0 = sample(before, "agenthub_dispatcher_runs_total", 'outcome="succeeded"')
    failed0 = sample(before, "agenthub_dispatcher_runs_total", 'outcome="failed"')
    statements0 = sample(before, "agenthub_dispatcher_write_statements_total")
    worlds = []
    with stack.connect() as conn:
        for code in (TWO_MESSAGES, TWO_MESSAGES, FAILS):
            worlds.append(agent_with_code(conn, tmp_path / str(len(worlds)), code))
    for w in worlds:
        assert stack.post(w).status_code == 202
    for w in worlds:
        stack.wait_job(w.job_id)
    # run_done (and the counter) follows the final write by a moment
    wait_for(lambda: sample(requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text,
                            "agenthub_dispatcher_runs_total", 'outcome="failed"') >= failed0 + 1)
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert sample(text, "agenthub_dispatcher_runs_total", 'outcome="succeeded"') == ok0 + 2
    assert sample(text, "agenthub_dispatcher_runs_total", 'outcome="failed"') == failed0 + 1
    assert sample(text, "agenthub_dispatcher_runs_total", 'outcome="retry_later"') == 0
    assert sample(text, "agenthub_dispatcher_run_duration_seconds_count", 'outcome="succeeded"') == ok0 + 2
    assert sample(text, "agenthub_dispatcher_claims_total") >= ok0 + failed0 + 3
    assert sample(text, "agenthub_piston_errors_total", 'kind="transient"') == 0
    # group commit: 2 x (two messages, progress, finish) + (message, finish) at least, JobLog lines besides
    assert sample(text, "agenthub_dispatcher_write_statements_total") >= statements0 + 10
    commits = sample(text, "agenthub_dispatcher_write_commits_total")
    assert 1 <= commits <= sample(text, "agenthub_dispatcher_write_statements_total")
    assert sample(text, "agenthub_dispatcher_write_failures_total", 'awaited="true"') == 0
    assert sample(text, "agenthub_database_up") == 1
    with stack.connect() as c:
        counts = {r["status"]: r["n"] for r in c.execute(
            "SELECT status::text, count(*) AS n FROM agent_hub.invocation_outbox GROUP BY status").fetchall()}
    assert sample(text, "agenthub_outbox_rows", 'status="succeeded"') == counts["succeeded"]
    assert sample(text, "agenthub_outbox_rows", 'status="failed"') == counts["failed"]
    assert sample(text, "agenthub_outbox_rows", 'status="pending"') == 0
    assert sample(text, "agenthub_outbox_oldest_pending_age_seconds") == 0


def test_web_metrics_serve_the_outbox_gauges(stack: Stack) -> None:
    resp = requests.get(stack.web_url + "/metrics", timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    assert sample(resp.text, "agenthub_database_up") == 1
    with stack.connect() as c:
        done = c.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox WHERE status = 'succeeded'").fetchone()
    assert done is not None
    assert sample(resp.text, "agenthub_outbox_rows", 'status="succeeded"') == done["n"]
