"""Every write a run makes is fenced by its row's owner and attempt (sql/queries/dispatcher/run_fence.sql):
a run that no longer holds its row — reclaimed by another dispatcher, or by us in a later attempt — changes
nothing, whichever write it is, and learns it at its first refused write."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from core.db import Pool
from dispatcher import childrows
from dispatcher import claim as claims
from dispatcher.states import OutboxStatus
from dispatcher.writeback import WriteBack
from tests import factories

OWNER = "fence-owner"


def expire_and_reclaim(conn: psycopg.Connection, pool: Pool, rid: int, *, by: str) -> None:
    conn.execute("UPDATE agent_hub.invocation_outbox SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
                 (rid,))
    assert [c.id for c in claims.claim(pool, owner=by, batch=1, lease_s=30)] == [rid]


class Lost:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def snapshot(conn: psycopg.Connection, w: factories.World) -> dict[str, object]:
    """Everything a run can write: the session's messages and variables, the Job, its log lines, the row,
    the children it started."""
    return {
        "messages": conn.execute('SELECT "id", "content" FROM "ChatMessage" WHERE "sessionId" = %s ORDER BY "id"',
                                 (w.session_id,)).fetchall(),
        "vars": conn.execute('SELECT "key", "value" FROM "UserVariable" WHERE "sessionId" = %s ORDER BY "key"',
                             (w.session_id,)).fetchall(),
        "job": conn.execute('SELECT "status"::text, "progress", "statusMessage", "errorMessage" FROM "Job" WHERE "id" = %s',
                            (w.job_id,)).fetchone(),
        "logs": conn.execute('SELECT "message" FROM "JobLog" WHERE "jobId" = %s ORDER BY "message"', (w.job_id,)).fetchall(),
        "row": conn.execute("SELECT status::text, attempts, lease_owner, last_error, result FROM agent_hub.invocation_outbox "
                            "WHERE job_id = %s", (w.job_id,)).fetchone(),
        "children": conn.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox c JOIN agent_hub.invocation_outbox p "
                                 "ON c.parent_id = p.id WHERE p.job_id = %s", (w.job_id,)).fetchone(),
    }


Write = Callable[[WriteBack, Pool, int, factories.World], object]
WRITES: dict[str, Write] = {
    "message": lambda wb, pool, rid, w: wb.message(1, "late"),
    "user_var": lambda wb, pool, rid, w: wb.user_var("who", "stale"),
    "progress": lambda wb, pool, rid, w: wb.progress(42.0, "stale progress"),
    "log": lambda wb, pool, rid, w: wb.log("info", "stale line"),
    "finish": lambda wb, pool, rid, w: wb.finish(OutboxStatus.FAILED, error="stale", result={"x": 1},
                                                 status_message="failed", logs=[("error", "stale finish line")]),
    "retry_later": lambda wb, pool, rid, w: wb.retry_later(delay_s=0, error="stale", status_message="stale"),
    "release": lambda wb, pool, rid, w: claims.release(pool, owner=wb.owner, rows=[(rid, wb.attempt)]),
    "insert_child": lambda wb, pool, rid, w: childrows.insert_child(
        pool, childrows.NewChild(agent_id=w.agent_id, job_id=factories.new_id(), user_id=w.user_id, prompt="p",
                                 parent_id=rid, depth=1, chain=[w.agent_id]), owner=wb.owner, lease_s=30,
        caller_attempt=wb.attempt),
}
# Only WriteBack's own writes tell the run (on_lost); the caller of release and insert_child reads their answer.
TELLS_THE_RUN = {"message", "user_var", "progress", "log", "finish", "retry_later"}


@pytest.mark.parametrize("write", sorted(WRITES))
@pytest.mark.parametrize("lost_to", ["another dispatcher", "our own later attempt"])
def test_a_run_that_lost_its_row_changes_nothing_whichever_write_it_makes(
    conn: psycopg.Connection, pool: Pool, write: str, lost_to: str
) -> None:
    w = factories.world(conn)
    rid = factories.enqueue(conn, w)
    assert [c.id for c in claims.claim(pool, owner=OWNER, batch=1, lease_s=30)] == [rid]
    lost = Lost()
    stale = WriteBack(pool, outbox_id=rid, job_id=w.job_id, session_id=w.session_id, owner=OWNER, attempt=1,
                      on_lost=lost)
    expire_and_reclaim(conn, pool, rid, by="new-owner" if lost_to == "another dispatcher" else OWNER)
    before = snapshot(conn, w)
    result = WRITES[write](stale, pool, rid, w)
    assert snapshot(conn, w) == before
    if write in TELLS_THE_RUN:
        assert (stale.lost, lost.calls) == (True, 1)
    else:
        assert result in (None, [])


@pytest.mark.parametrize("write", sorted(WRITES))
def test_the_run_holding_its_row_writes(conn: psycopg.Connection, pool: Pool, write: str) -> None:
    w = factories.world(conn)
    rid = factories.enqueue(conn, w)
    claims.claim(pool, owner=OWNER, batch=1, lease_s=30)
    lost = Lost()
    wb = WriteBack(pool, outbox_id=rid, job_id=w.job_id, session_id=w.session_id, owner=OWNER, attempt=1, on_lost=lost)
    before = snapshot(conn, w)
    WRITES[write](wb, pool, rid, w)
    assert snapshot(conn, w) != before
    assert (wb.lost, lost.calls) == (False, 0)


def test_an_expired_lease_not_yet_taken_is_still_the_runs_to_write(conn: psycopg.Connection, pool: Pool) -> None:
    # "Still ours" is the owner and attempt, not the clock: a run that finished during an outage longer than its
    # lease writes its outcome when Postgres is back, unless another dispatcher took the row meanwhile.
    w = factories.world(conn)
    rid = factories.enqueue(conn, w)
    claims.claim(pool, owner=OWNER, batch=1, lease_s=30)
    conn.execute("UPDATE agent_hub.invocation_outbox SET lease_expires_at = now() - interval '1 minute' WHERE id = %s",
                 (rid,))
    wb = WriteBack(pool, outbox_id=rid, job_id=w.job_id, session_id=w.session_id, owner=OWNER, attempt=1)
    assert wb.finish(OutboxStatus.SUCCEEDED, error=None, result={}, status_message="completed")
    assert snapshot(conn, w)["row"]["status"] == "succeeded"  # type: ignore[index]
