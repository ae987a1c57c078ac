"""A pool of two Piston servers (issue 16, item 6) with the real processes: runs spread over both; killing one
mid-backlog loses no run and fails none (the runs it had go to the other server at once, without a retry or
an attempt), and the logs and /metrics name the server that went away."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from tests import factories
from tests.integration.localpiston_proc import LocalPiston, free_port
from tests.stack import Stack, agent_with_code
from tests.waiting import wait_until

RUNS = 12
AGENT = "import time, hub\nhub.send_message('working')\ntime.sleep(2)\nhub.send_message('done')\n"
PISTON_ENV = {"PISTON_RUN_TIMEOUT": "20000", "PISTON_RUN_CPU_TIME": "20000"}


@pytest.fixture(scope="module")
def second() -> Iterator[LocalPiston]:
    with LocalPiston(PISTON_ENV) as server:
        server.start()
        yield server


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def stack(module_db_url: str, second: LocalPiston, metrics_port: int) -> Iterator[Stack]:
    s = Stack(module_db_url, piston_env=PISTON_ENV,
              dispatcher_env={"DISPATCHER_CONCURRENCY": "4", "PISTON_TRANSPORT": "ws",
                              "DISPATCHER_METRICS_PORT": str(metrics_port)})
    s.dispatcher_env["PISTON_URL"] = f"{s.piston.url}=2,{second.url}=2"
    s.start()
    yield s
    s.close()


def metric(port: int, name: str, server: str) -> float | None:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    found = re.search(rf'^{name}\{{server="{re.escape(server)}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_stopping_one_of_two_servers_mid_backlog_loses_no_run_and_fails_none(
    stack: Stack, second: LocalPiston, hub_conn: psycopg.Connection, tmp_path: Path, metrics_port: int
) -> None:
    first = agent_with_code(hub_conn, tmp_path, AGENT)
    worlds = [first]
    for _ in range(RUNS - 1):  # one session each: they may all run at once
        sid = factories.session(hub_conn, first.user_id, first.agent_id)
        factories.chat_message(hub_conn, sid, "user", "p")
        worlds.append(factories.World(first.user_id, first.agent_id, sid,
                                      factories.job(hub_conn, first.user_id, first.agent_id, sid), "p"))
    for w in worlds:
        assert stack.post(w).status_code == 202
    wait_until(second.busy, what="a run on the second server", details=stack.logs)
    assert metric(metrics_port, "agenthub_piston_server_runs_in_flight", second.url) in (1.0, 2.0)
    second.kill()  # mid-run: its sockets drop; later runs find it refusing connections
    for w in worlds:
        job = stack.wait_job(w.job_id, timeout=120)
        assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
        assert stack.messages(w.session_id) == ["working", "done"]  # each message once, the moved runs included
        assert stack.outbox(w.job_id)["attempts"] == 1  # no attempt used
    logs = [r["message"] for w in worlds for r in stack.job_logs(w.job_id)]
    assert any(line.startswith(f"Piston server {second.url} failed") and line.endswith(f"goes to {stack.piston.url} at once")
               for line in logs), logs
    assert not any("retrying (try" in line for line in logs)
    events = [json.loads(line) for line in stack.dispatchers[0].output().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "piston_server_cooling_down" and e.get("server") == second.url for e in events)
    assert {e.get("server") for e in events if e.get("event") == "piston_run_start"} == {stack.piston.url, second.url}
    assert (metric(metrics_port, "agenthub_piston_server_failures_total", second.url) or 0) >= 1
    assert metric(metrics_port, "agenthub_piston_server_failures_total", stack.piston.url) == 0.0
