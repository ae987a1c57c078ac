"""The journal trigger (migration 0006) enforces dispatcher/states.py's state machine: every status move the
machine has is recorded, every other one is refused and leaves the row and its history as they were."""

from __future__ import annotations

import itertools

import psycopg
import pytest

from core.vocabulary import OutboxStatus
from dispatcher.states import ALLOWED, TRANSITIONS

PAIRS = list(itertools.product(OutboxStatus, OutboxStatus))


def row_in(conn: psycopg.Connection, status: OutboxStatus) -> int:
    """A top-level row without a session (so no per-session rule applies), already in ``status``: an insert
    is not a transition, so the trigger lets any status in."""
    n = conn.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox").fetchone()["n"]
    row = conn.execute(
        "INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, session_id, user_id, prompt, status, attempts, "
        "lease_owner, lease_expires_at, finished_at) "
        "VALUES (%(job)s, 'a', NULL, 'u', 'p', %(status)s::agent_hub.invocation_status, 1, "
        "CASE WHEN %(status)s = 'running' THEN 'owner' END, "
        "CASE WHEN %(status)s = 'running' THEN now() + interval '1 minute' END, "
        "CASE WHEN %(status)s IN ('succeeded', 'failed', 'cancelled') THEN now() END) RETURNING id",
        {"job": f"transition-job-{n}", "status": status.value}).fetchone()
    return int(row["id"])


def move(conn: psycopg.Connection, row_id: int, status: OutboxStatus) -> None:
    """Set ``status`` (with the columns its CHECK constraints ask for) and a new attempt, so the trigger fires
    even when the status stays the same (as a reclaim's does)."""
    conn.execute(
        "UPDATE agent_hub.invocation_outbox SET status = %(status)s::agent_hub.invocation_status, "
        "attempts = attempts + 1, "
        "lease_owner = CASE WHEN %(status)s = 'running' THEN 'new-owner' END, "
        "lease_expires_at = CASE WHEN %(status)s = 'running' THEN now() + interval '1 minute' END, "
        "finished_at = CASE WHEN %(status)s IN ('succeeded', 'failed', 'cancelled') THEN now() END "
        "WHERE id = %(id)s", {"status": status.value, "id": row_id})


def snapshot(conn: psycopg.Connection, row_id: int) -> tuple[object, ...]:
    row = conn.execute("SELECT status::text AS status, attempts FROM agent_hub.invocation_outbox WHERE id = %s",
                       (row_id,)).fetchone()
    events = conn.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox_event WHERE outbox_id = %s",
                          (row_id,)).fetchone()
    return row["status"], row["attempts"], events["n"]


def test_the_machine_names_the_moves_this_service_makes() -> None:
    assert {t.name for t in TRANSITIONS} == {"claim", "reclaim", "finish", "retry_later", "release", "cancel", "replay"}
    terminal = {s for s in OutboxStatus if s.terminal}
    assert (
        {(OutboxStatus.PENDING, OutboxStatus.RUNNING), (OutboxStatus.PENDING, OutboxStatus.CANCELLED),
         (OutboxStatus.RUNNING, OutboxStatus.PENDING), (OutboxStatus.RUNNING, OutboxStatus.RUNNING)}
        | {(OutboxStatus.RUNNING, t) for t in terminal}
        | {(t, OutboxStatus.PENDING) for t in terminal}
    ) == ALLOWED


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_the_database_allows_exactly_the_state_machines_moves(
    conn: psycopg.Connection, src: OutboxStatus, dst: OutboxStatus
) -> None:
    row_id = row_in(conn, src)
    before = snapshot(conn, row_id)
    if (src, dst) in ALLOWED:
        move(conn, row_id, dst)
        last = conn.execute("SELECT from_status::text AS f, to_status::text AS t, reason FROM "
                            "agent_hub.invocation_outbox_event WHERE outbox_id = %s ORDER BY id DESC LIMIT 1",
                            (row_id,)).fetchone()
        assert (last["f"], last["t"]) == (src.value, dst.value)
        assert last["reason"]  # every allowed move says why, even without an operator's reason
    else:
        with pytest.raises(psycopg.errors.CheckViolation, match=f"cannot go from {src.value} to {dst.value}") as exc:
            move(conn, row_id, dst)
        assert exc.value.diag.constraint_name == "invocation_outbox_transition"
        assert snapshot(conn, row_id) == before


def test_an_update_that_leaves_the_status_and_attempts_alone_is_not_a_transition(conn: psycopg.Connection) -> None:
    row_id = row_in(conn, OutboxStatus.SUCCEEDED)
    before = snapshot(conn, row_id)
    conn.execute("UPDATE agent_hub.invocation_outbox SET status = 'succeeded', result = '{}' WHERE id = %s", (row_id,))
    assert snapshot(conn, row_id) == before
