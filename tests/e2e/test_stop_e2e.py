"""A stop that stops (issue 16, item 4), with the real processes and a Piston server of ONE slot: cancelling a
running Job that would otherwise run on for minutes lets an invocation of another session, queued behind it in
Piston, finish soon after; a dispatcher stopped past its grace period ends its agents' processes too.

The deadlines only tell "the slot was freed" from "the slot was held until the run's own limit" (120 s); how
soon the slot is free is measured by ``python -m bench.stop_latency``.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.stack import Stack, agent_with_code
from tests.waiting import wait_until

HOLD_S = 120
FREED_WITHIN_S = 60
SLEEPER = f"import time, hub\nhub.send_message('started')\ntime.sleep({HOLD_S})\nhub.send_message('never')\n"
QUICK = "import hub\nhub.send_message('quick one done')\n"


@pytest.fixture(scope="module")
def stack(module_db_url: str) -> Iterator[Stack]:
    limit = str((HOLD_S + 60) * 1000)
    s = Stack(module_db_url,
              piston_env={"PISTON_MAX_CONCURRENT_JOBS": "1", "PISTON_RUN_TIMEOUT": limit, "PISTON_RUN_CPU_TIME": limit},
              dispatcher_env={"DISPATCHER_CONCURRENCY": "2", "AGENT_RUN_TIMEOUT_MS": limit, "PISTON_TRANSPORT": "ws",
                              "DISPATCHER_SHUTDOWN_GRACE_S": "1"})
    s.start()
    yield s
    s.close()


def test_cancelling_a_running_job_frees_the_only_piston_slot_for_another_sessions_run(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    long = agent_with_code(hub_conn, tmp_path, SLEEPER)
    quick = agent_with_code(hub_conn, tmp_path, QUICK)
    assert stack.post(long).status_code == 202
    wait_until(lambda: stack.messages(long.session_id) == ["started"], what="the long run to start", details=stack.logs)
    assert stack.post(quick).status_code == 202
    wait_until(lambda: stack.outbox(quick.job_id)["status"] == "running", what="the quick run to wait for the slot",
               details=stack.logs)
    hub_conn.execute("""UPDATE "Job" SET "status" = 'CANCELLED' WHERE "id" = %s""", (long.job_id,))  # as Next.js does
    job = stack.wait_job(quick.job_id, timeout=FREED_WITHIN_S)
    assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
    assert stack.messages(quick.session_id) == ["quick one done"]
    wait_until(lambda: stack.outbox(long.job_id)["status"] == "cancelled", what="the long row to end cancelled")
    assert stack.outbox(long.job_id)["result"]["status"] == "STOPPED"
    assert stack.messages(long.session_id) == ["started"]


def test_a_dispatcher_stopped_past_its_grace_period_ends_its_agents_processes(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    long = agent_with_code(hub_conn, tmp_path, SLEEPER)
    assert stack.post(long).status_code == 202
    wait_until(lambda: stack.messages(long.session_id) == ["started"], what="the run to start", details=stack.logs)
    dispatcher = stack.dispatchers[-1]
    dispatcher.signal(signal.SIGTERM)  # 1 s of grace, then the run is released... and its process ended
    assert dispatcher.wait(30) == 0, dispatcher.output()
    assert stack.outbox(long.job_id)["status"] == "pending"  # released for another dispatcher
    wait_until(lambda: not stack.piston.busy(), timeout=FREED_WITHIN_S, what="the agent's process to end",
               details=stack.logs)
