"""A Piston server whose run limit is below what the dispatcher asks (issue 16, item 2), with the real processes:
with PISTON_RUN_TIMEOUT=3000 and AGENT_RUN_TIMEOUT_MS=60000 a 1 s agent succeeds (its run goes at the server's
3 s instead of being refused), and the dispatcher logs the server's limit once, however many runs ask more."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.stack import Stack, agent_with_code

ONE_SECOND = "import time, hub\ntime.sleep(1)\nhub.send_message('done')\n"


@pytest.fixture(scope="module", params=["ws", "execute"])
def stack(request: pytest.FixtureRequest, module_db_url: str) -> Iterator[Stack]:
    s = Stack(module_db_url, piston_env={"PISTON_RUN_TIMEOUT": "3000"},
              dispatcher_env={"AGENT_RUN_TIMEOUT_MS": "60000", "PISTON_TRANSPORT": request.param})
    s.start()
    yield s
    s.close()


def test_runs_asking_more_than_the_servers_limit_succeed_at_it_and_the_limit_is_logged_once(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    worlds = [agent_with_code(hub_conn, tmp_path, ONE_SECOND) for _ in range(3)]
    for w in worlds:
        assert stack.post(w).status_code == 202
    for w in worlds:
        job = stack.wait_job(w.job_id)
        assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
        assert stack.messages(w.session_id) == ["done"]
    [dispatcher] = stack.dispatchers
    learned = [e for e in map(_json, dispatcher.output().splitlines()) if e.get("event") == "piston_limit_learned"]
    assert [(e["field"], e["limit"], e["server"]) for e in learned] == [("run_timeout", 3000, stack.piston.url)]
    logs = [r["message"] for r in stack.job_logs(worlds[0].job_id)]
    assert any(line.startswith(f"Piston server {stack.piston.url} allows less than this run asked: it ran with 3000 ms")
               for line in logs), logs


def _json(line: str) -> dict[str, object]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
