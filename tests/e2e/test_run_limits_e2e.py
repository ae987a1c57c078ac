"""Per-agent run limits with the real processes (issue 16, item 1): the service's default is 3 s, the operator's
maximum 10 s; an agent whose HUB_RUN_TIMEOUT_MS is 8000 sleeps 5 s and succeeds, one without fails at 3 s, and
one asking 60 s runs at the maximum, with a JobLog line saying so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.stack import Stack, agent_with_code


@pytest.fixture(scope="module")
def stack(module_db_url: str) -> Iterator[Stack]:
    s = Stack(module_db_url, dispatcher_env={"AGENT_RUN_TIMEOUT_MS": "3000", "AGENT_RUN_TIMEOUT_MAX_MS": "10000"})
    s.start()
    yield s
    s.close()


def sleeper(seconds: int) -> str:
    return f"import time, hub\ntime.sleep({seconds})\nhub.send_message('slept {seconds} s')\n"


def test_an_agent_whose_own_limit_is_8_s_sleeps_5_s_and_succeeds_where_the_service_gives_3_s(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    own = agent_with_code(hub_conn, tmp_path, sleeper(5), env={"HUB_RUN_TIMEOUT_MS": "8000"})
    default = agent_with_code(hub_conn, tmp_path, sleeper(5))
    assert (stack.post(own).status_code, stack.post(default).status_code) == (202, 202)
    job = stack.wait_job(own.job_id)
    assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
    assert stack.messages(own.session_id) == ["slept 5 s"]
    assert "HUB_RUN_TIMEOUT_MS=8000: this run gets 8000 ms" in [r["message"] for r in stack.job_logs(own.job_id)]
    failed = stack.wait_job(default.job_id)
    assert (failed["status"], failed["errorMessage"]) == ("FAILED", "timed out after 3 s")


def test_an_agent_asking_above_the_operators_maximum_runs_at_the_maximum_and_its_log_says_so(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, sleeper(12), env={"HUB_RUN_TIMEOUT_MS": "60000"})
    assert stack.post(w).status_code == 202
    job = stack.wait_job(w.job_id)
    assert (job["status"], job["errorMessage"]) == ("FAILED", "timed out after 10 s"), stack.logs()
    logs = stack.job_logs(w.job_id)
    assert {"level": "warning", "message": "HUB_RUN_TIMEOUT_MS=60000 clamped: over the operator's maximum 10000 ms "
                                           "(AGENT_RUN_TIMEOUT_MAX_MS); this run gets 10000 ms"} in logs
