"""Lease fencing with the real processes: a dispatcher paused (SIGSTOP) past its lease while its agent runs,
with a second dispatcher up. The row is taken over and finished once, and nothing the paused dispatcher relays
after it resumes reaches the hub: every user variable, progress value, message and agent log line of the Job
comes from the run whose outcome was committed."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Proc, Stack, agent_with_code

LEASE = {"DISPATCHER_LEASE_S": "3", "DISPATCHER_HEARTBEAT_S": "0.5", "DISPATCHER_POLL_INTERVAL_S": "0.5"}
# Writes nothing until 2 s in: the first dispatcher is paused before its run has anything to relay.
AGENT = """\
import time, hub
time.sleep(2.0)
a = hub.get_attempt()
hub.set_user_var("who", str(a))
hub.set_progress(10 * a, f"attempt {a}")
hub.log(f"attempt {a} wrote")
hub.send_message(f"from attempt {a}")
time.sleep(0.3)
"""


@pytest.fixture
def stack(db_url: str) -> Iterator[Stack]:
    s = Stack(db_url, web=False, dispatcher_env=LEASE)
    s.piston.start()
    yield s
    s.close()


def lines(proc: Proc, event: str) -> list[dict]:
    out = []
    for line in proc.output().splitlines():
        if f'"{event}"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def wait_for(what: str, check, stack: Stack, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s\n{stack.logs()}"
        time.sleep(0.05)


def test_a_dispatcher_paused_past_its_lease_writes_nothing_after_it_resumes_and_the_row_finishes_once(
    stack: Stack, tmp_path: Path
) -> None:
    paused = stack.add_dispatcher()
    with stack.connect() as conn:
        w = agent_with_code(conn, tmp_path, AGENT)
        from tests import factories

        factories.enqueue(conn, w)
    wait_for("the first claim", lambda: stack.outbox(w.job_id)["status"] == "running", stack)
    paused.signal(signal.SIGSTOP)
    try:
        taker = stack.add_dispatcher()
        assert stack.wait_job(w.job_id, timeout=60)["status"] == "SUCCEEDED"
    finally:
        paused.signal(signal.SIGCONT)
    # The paused dispatcher resumes with its run's output waiting in its socket: it relays nothing of it.
    wait_for("the resumed dispatcher to end its run", lambda: lines(paused, "run_done"), stack)
    ended = lines(paused, "run_done")[0]
    assert ended["outcome"] in ("lease_lost", "released"), ended

    row = stack.outbox(w.job_id)
    assert (row["status"], row["attempts"]) == ("succeeded", 2)
    with stack.connect() as conn:
        reasons = [r["reason"] for r in conn.execute(
            "SELECT reason FROM agent_hub.invocation_outbox_event WHERE outbox_id = %s ORDER BY id", (row["id"],))]
        assert reasons == ["queued", "claimed", "lease expired; reclaimed", "finished"]
        uservars = conn.execute('SELECT "key", "value" FROM "UserVariable" WHERE "sessionId" = %s',
                                (w.session_id,)).fetchall()
        job = conn.execute('SELECT "progress", "statusMessage" FROM "Job" WHERE "id" = %s', (w.job_id,)).fetchone()
    assert uservars == [{"key": "who", "value": "2"}]
    assert stack.messages(w.session_id) == ["from attempt 2"]
    agent_lines = [r["message"] for r in stack.job_logs(w.job_id) if r["message"].startswith("agent:")]
    assert agent_lines == ["agent: attempt 2 wrote"]
    assert job["progress"] == 100.0  # SUCCEEDED's; attempt 1's 10 never landed over it
    # It learnt so from the fence or its heartbeat, or stopped itself first; whichever came first, it said so.
    said = lines(paused, "write_fenced") + lines(paused, "lease_self_fenced") + lines(paused, "lease_lost")
    assert said, paused.output()[-3000:]
    assert taker.alive() and paused.alive()
