"""Two healthy dispatchers on one database: every row runs exactly once, a run longer than the lease keeps it
through the heartbeat, and a session's invocations run in queue order while other sessions run alongside.

Message ids derive from (job, sequence), so "each message once" would hold even if a row ran twice: these
tests count claims instead (the row's `attempts`, its `claimed` events in invocation_outbox_event) and the
JobLog lines each run writes (JobLog ids are random, so a second run would add lines).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.stack import TERMINAL, Proc, Stack, agent_with_code

ONE_LINE = "import hub\nhub.log('agent ran')\nhub.send_message('hi')\n"


# -- helpers -----------------------------------------------------------------------------------------
def wait_listening(stack: Stack, timeout: float = 60.0) -> list[str]:
    """Wait until every dispatcher LISTENs (it polls and claims from then on); returns their lease owners."""
    deadline = time.monotonic() + timeout
    while not all('"event": "listening"' in d.output() for d in stack.dispatchers):
        dead = [d for d in stack.dispatchers if not d.alive()]
        assert not dead and time.monotonic() < deadline, f"dispatchers not up\n{stack.logs()}"
        time.sleep(0.05)
    return [owner_of(d) for d in stack.dispatchers]


def owner_of(dispatcher: Proc) -> str:
    for line in dispatcher.output().splitlines():
        if '"dispatcher_started"' in line:
            return str(json.loads(line)["owner"])
    raise AssertionError("no dispatcher_started line")


def more_sessions(conn: psycopg.Connection, first: factories.World, n: int) -> list[factories.World]:
    """`first` and n-1 more invocations of its agent, each on a session of its own."""
    out = [first]
    for _ in range(n - 1):
        sid = factories.session(conn, first.user_id, first.agent_id)
        factories.chat_message(conn, sid, "user", first.prompt)
        jid = factories.job(conn, first.user_id, first.agent_id, sid)
        out.append(factories.World(first.user_id, first.agent_id, sid, jid, first.prompt))
    return out


def enqueue_at_once(stack: Stack, ws: list[factories.World]) -> None:
    """Queue every invocation in one transaction (the ingress's own SQL): its NOTIFYs all arrive at the
    commit, so both dispatchers start claiming the same rows at the same moment."""
    with stack.connect() as conn, conn.transaction():
        for w in ws:
            factories.enqueue(conn, w)


def wait_jobs(stack: Stack, ws: list[factories.World], timeout: float = 90.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        with stack.connect() as c:
            rows = c.execute('SELECT "id", "status"::text AS status FROM "Job" WHERE "id" = ANY(%s)',
                             ([w.job_id for w in ws],)).fetchall()
        found = {r["id"]: r["status"] for r in rows}
        if all(found.get(w.job_id) in TERMINAL for w in ws):
            return found
        assert time.monotonic() < deadline, f"jobs not finished after {timeout} s: {found}\n{stack.logs()}"
        time.sleep(0.1)


def history(stack: Stack, ws: list[factories.World]) -> dict[str, dict[str, Any]]:
    """Per job: the row's attempts, its events' reasons and the owners of its claims, oldest first."""
    with stack.connect() as c:
        rows = c.execute(
            "SELECT o.job_id, o.attempts, array_agg(e.reason ORDER BY e.id) AS reasons, "
            "       array_agg(e.detail->>'lease_owner' ORDER BY e.id) FILTER (WHERE e.to_status = 'running') AS owners "
            "FROM agent_hub.invocation_outbox o JOIN agent_hub.invocation_outbox_event e ON e.outbox_id = o.id "
            "WHERE o.job_id = ANY(%s) GROUP BY o.id",
            ([w.job_id for w in ws],),
        ).fetchall()
    return {r["job_id"]: r for r in rows}


def log_count(stack: Stack, ws: list[factories.World], text: str) -> dict[str, int]:
    """Per job: how many of its JobLog lines start with `text`."""
    with stack.connect() as c:
        rows = c.execute('SELECT "jobId" AS job_id, count(*) AS n FROM "JobLog" '
                         'WHERE "jobId" = ANY(%s) AND starts_with("message", %s) GROUP BY "jobId"',
                         ([w.job_id for w in ws], text)).fetchall()
    counts = {w.job_id: 0 for w in ws}
    counts.update({r["job_id"]: int(r["n"]) for r in rows})
    return counts


def session_events(stack: Stack, ws: list[factories.World]) -> list[tuple[int, str, str, str]]:
    """(event id, session, job's prompt, claimed|finished) for the runs of `ws`, in the order they happened:
    event ids come from a sequence, and a claim can only see a finish that committed before it."""
    prompts = {w.job_id: w.prompt for w in ws}
    with stack.connect() as c:
        rows = c.execute(
            "SELECT e.id, o.session_id, o.job_id, e.reason FROM agent_hub.invocation_outbox_event e "
            "JOIN agent_hub.invocation_outbox o ON o.id = e.outbox_id "
            "WHERE o.job_id = ANY(%s) AND e.reason IN ('claimed', 'finished') ORDER BY e.id",
            (list(prompts),),
        ).fetchall()
    return [(r["id"], r["session_id"], prompts[r["job_id"]], r["reason"]) for r in rows]


# -- 1. never a row twice ----------------------------------------------------------------------------
@pytest.fixture
def two(db_url: str) -> Iterator[Stack]:
    # No web: rows are queued with the ingress's SQL in one transaction (see enqueue_at_once).
    stack = Stack(db_url, web=False, dispatcher_env={"DISPATCHER_CONCURRENCY": "4", "DISPATCHER_POLL_INTERVAL_S": "0.5"})
    stack.start()
    stack.add_dispatcher()
    yield stack
    stack.close()


def test_two_dispatchers_claim_and_finish_each_of_100_rows_exactly_once(two: Stack, tmp_path: Path) -> None:
    owners = wait_listening(two)
    with two.connect() as conn:
        ws = more_sessions(conn, agent_with_code(conn, tmp_path, ONE_LINE), 100)
    enqueue_at_once(two, ws)
    statuses = wait_jobs(two, ws)
    assert set(statuses.values()) == {"SUCCEEDED"}, f"{statuses}\n{two.logs()}"
    rows = history(two, ws)
    twice = {j: (r["attempts"], r["reasons"]) for j, r in rows.items()
             if r["attempts"] != 1 or r["reasons"] != ["queued", "claimed", "finished"]}
    assert not twice, f"{len(twice)} rows not claimed and finished exactly once, e.g. {list(twice.items())[:3]}"
    for counted in (log_count(two, ws, "run started:"), log_count(two, ws, "agent: agent ran")):
        assert set(counted.values()) == {1}, {j: n for j, n in counted.items() if n != 1}
    # Both dispatchers really competed for the rows (else this would test one dispatcher).
    claims_by = {o: sum(1 for r in rows.values() if r["owners"] == [o]) for o in owners}
    assert all(n > 0 for n in claims_by.values()) and sum(claims_by.values()) == 100, claims_by


# -- 2. a run longer than the lease ------------------------------------------------------------------
LONG_RUN = """
import time, hub
hub.log("agent ran")
hub.send_message("start")
time.sleep(6)
hub.send_message("end")
"""


def test_a_run_three_times_longer_than_the_lease_keeps_it_and_runs_once_while_another_dispatcher_polls(
    db_url: str, tmp_path: Path
) -> None:
    lease_s = 2.0
    stack = Stack(db_url, web=False, dispatcher_env={
        "DISPATCHER_LEASE_S": str(lease_s), "DISPATCHER_HEARTBEAT_S": "0.5", "DISPATCHER_POLL_INTERVAL_S": "0.5",
    }).start()  # AGENT_RUN_TIMEOUT_MS 10 s, within the Stack's localpiston limit of 20 s
    try:
        stack.add_dispatcher()
        wait_listening(stack)
        with stack.connect() as conn:
            w = agent_with_code(conn, tmp_path, LONG_RUN)
        enqueue_at_once(stack, [w])
        deadline = time.monotonic() + 40
        while (job := stack.job(w.job_id))["status"] not in TERMINAL:
            # Fail at the first reclaim rather than at the deadline: a lapsed lease is reclaimed over and over.
            assert stack.outbox(w.job_id)["attempts"] <= 1, f"claimed again: {history(stack, [w])}\n{stack.logs()}"
            assert time.monotonic() < deadline, f"job still {job['status']}\n{stack.logs()}"
            time.sleep(0.1)
        assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
        row = stack.outbox(w.job_id)
        assert row["result"]["wall_ms"] > 2.5 * lease_s * 1000, row["result"]  # the run did outlast the lease
        [h] = history(stack, [w]).values()
        assert (h["attempts"], h["reasons"]) == (1, ["queued", "claimed", "finished"]), (h, stack.logs())
        assert stack.messages(w.session_id) == ["start", "end"]
        assert log_count(stack, [w], "run started:") == {w.job_id: 1}
        assert log_count(stack, [w], "agent: agent ran") == {w.job_id: 1}
    finally:
        stack.close()


# -- 3. first in, first out per session --------------------------------------------------------------
FIFO_AGENT = """
import time, hub
prompt = hub.get_prompt()
hub.set_user_var("order", hub.get_user_vars().get("order", "") + prompt + " ")
hub.send_message(prompt)
time.sleep(0.3)
"""


def test_a_sessions_invocations_start_and_finish_in_queue_order_while_another_session_runs_alongside(
    db_url: str, tmp_path: Path
) -> None:
    n = 6
    stack = Stack(db_url, dispatcher_env={"DISPATCHER_CONCURRENCY": "3", "DISPATCHER_POLL_INTERVAL_S": "0.5"}).start()
    try:
        stack.add_dispatcher()
        wait_listening(stack)
        with stack.connect() as conn:
            a1 = agent_with_code(conn, tmp_path, FIFO_AGENT, prompt="a1")
            sid_b = factories.session(conn, a1.user_id, a1.agent_id)
            factories.chat_message(conn, sid_b, "user", "b1")
            b1 = factories.World(a1.user_id, a1.agent_id, sid_b, factories.job(conn, a1.user_id, a1.agent_id, sid_b), "b1")
            sa = [a1, *(factories.next_turn(conn, a1, f"a{i}") for i in range(2, n + 1))]
            sb = [b1, *(factories.next_turn(conn, b1, f"b{i}") for i in range(2, n + 1))]
        # Queued through the web as Next.js does, the two sessions' prompts alternating.
        for wa, wb in zip(sa, sb, strict=True):
            for w in (wa, wb):
                assert stack.post(w).status_code == 202
        statuses = wait_jobs(stack, sa + sb)
        assert set(statuses.values()) == {"SUCCEEDED"}, f"{statuses}\n{stack.logs()}"

        events = session_events(stack, sa + sb)
        for session in (sa, sb):
            queued = [w.prompt for w in session]
            # Claimed then finished, one after the other, in queue order: [claimed a1, finished a1, claimed a2, ...]
            mine = [(prompt, reason) for _, sid, prompt, reason in events if sid == session[0].session_id]
            assert mine == [(p, r) for p in queued for r in ("claimed", "finished")], mine
            # What the agents saw and did, in the order they ran.
            assert stack.messages(session[0].session_id) == queued
            with stack.connect() as c:
                var = c.execute('SELECT "value" FROM "UserVariable" WHERE "sessionId" = %s AND "key" = %s',
                                (session[0].session_id, "order")).fetchone()
            assert var is not None and var["value"].split() == queued
        # The other session was not held back: some run of b started while a run of a was under way.
        open_a: set[str] = set()
        overlapped = False
        for _, sid, prompt, reason in events:
            if sid == a1.session_id:
                (open_a.add if reason == "claimed" else open_a.discard)(prompt)
            elif reason == "claimed" and open_a:
                overlapped = True
        assert overlapped, events
    finally:
        stack.close()
