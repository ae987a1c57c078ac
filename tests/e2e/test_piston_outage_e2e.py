"""End to end: Piston goes away in the middle of a run and comes back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.stack import Stack, agent_with_code
from tests.waiting import wait_until

# The sleep is the window in which the test sees the run going and kills Piston: roomy for a loaded machine.
SLOW_AGENT = "import time, hub\nhub.send_message('before')\ntime.sleep(4)\nhub.send_message('after')\n"


@pytest.mark.parametrize("transport", ["ws", "execute"])
def test_piston_stopped_during_a_run_is_retried_and_succeeds_without_duplicate_messages(
    db_url: str, tmp_path: Path, transport: str
) -> None:
    stack = Stack(db_url, dispatcher_env={"PISTON_TRANSPORT": transport, "PISTON_RETRY_ATTEMPTS": "3"}).start()
    try:
        with stack.connect() as conn:
            w = agent_with_code(conn, tmp_path, SLOW_AGENT)
        assert stack.post(w).status_code == 202
        stack.wait_job(w.job_id, ("PROCESSING",), timeout=15)
        if transport == "ws":
            wait_until(lambda: stack.messages(w.session_id) == ["before"], what="the first message", details=stack.logs)
        else:  # the batch transport relays nothing before the end: wait for the program to run in the sandbox
            wait_until(stack.piston.busy, what="the agent to run in Piston", details=stack.logs)
        stack.piston.kill()  # SIGKILL: a crashed host, not a graceful stop
        time.sleep(3)
        stack.piston.start()
        job = stack.wait_job(w.job_id, timeout=60)
        assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
        assert stack.messages(w.session_id) == ["before", "after"]
        logs = [entry["message"] for entry in stack.job_logs(w.job_id)]
        assert any("Piston unavailable" in m for m in logs), logs
    finally:
        stack.close()


def test_piston_down_past_every_retry_fails_the_job_with_a_clear_reason(db_url: str, tmp_path: Path) -> None:
    stack = Stack(db_url, dispatcher_env={
        "PISTON_RETRY_ATTEMPTS": "2", "DISPATCHER_RETRY_DELAY_S": "0.1", "DISPATCHER_RETRY_MAX_DELAY_S": "0.2",
    }, web_env={"OUTBOX_MAX_ATTEMPTS": "2"}).start()
    try:
        stack.piston.stop()
        with stack.connect() as conn:
            w = agent_with_code(conn, tmp_path, "import hub\nhub.send_message('hi')\n")
        assert stack.post(w).status_code == 202
        job = stack.wait_job(w.job_id, timeout=60)
        assert job["status"] == "FAILED"
        assert "Piston unavailable" in job["errorMessage"] and "gave up after" in job["errorMessage"], job["errorMessage"]
        assert stack.outbox(w.job_id)["attempts"] == stack.outbox(w.job_id)["max_attempts"]
    finally:
        stack.close()
