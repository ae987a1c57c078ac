"""The claim query and the other row transitions, on real Postgres."""

from __future__ import annotations

import itertools

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from core.sqlfiles import query
from dispatcher import claim as claims
from dispatcher.states import OutboxStatus
from dispatcher.writeback import WriteBack, message_id
from tests import factories

OWNER = "test-owner"


def enqueue(conn: psycopg.Connection, w: factories.World) -> int:
    return factories.enqueue(conn, w)


def claim_ids(pool: ConnectionPool, batch: int = 10, owner: str = OWNER, lease_s: float = 30) -> list[int]:
    return [c.id for c in claims.claim(pool, owner=owner, batch=batch, lease_s=lease_s)]


def claimed_run(conn: psycopg.Connection, pool: ConnectionPool) -> tuple[factories.World, int, WriteBack]:
    """A new invocation, claimed by OWNER, and the WriteBack of its first attempt."""
    w = factories.world(conn)
    rid = enqueue(conn, w)
    claim_ids(pool)
    return w, rid, WriteBack(pool, outbox_id=rid, job_id=w.job_id, session_id=w.session_id, owner=OWNER, attempt=1)


def test_claim_leases_due_rows_in_order_and_moves_their_jobs_to_processing(
    conn: psycopg.Connection, pool: ConnectionPool
) -> None:
    worlds = [factories.world(conn) for _ in range(3)]
    ids = [enqueue(conn, w) for w in worlds]
    claimed = claims.claim(pool, owner=OWNER, batch=10, lease_s=30)
    assert [c.id for c in claimed] == ids
    assert all(c.attempts == 1 and c.job_started and c.job_status_before == "QUEUED" for c in claimed)
    rows = conn.execute(
        "SELECT status, lease_owner, lease_expires_at > now() AS live, started_at FROM agent_hub.invocation_outbox"
    ).fetchall()
    assert all(r["status"] == "running" and r["lease_owner"] == OWNER and r["live"] and r["started_at"] for r in rows)
    jobs = conn.execute(
        'SELECT j."status"::text, j."startedAt" = (o.started_at AT TIME ZONE \'UTC\')::timestamp(3) AS started_at_claim '
        'FROM "Job" j JOIN agent_hub.invocation_outbox o ON o.job_id = j."id" WHERE j."id" = ANY(%s)',
        ([w.job_id for w in worlds],),
    ).fetchall()
    assert jobs == [{"status": "PROCESSING", "started_at_claim": True}] * 3
    assert claim_ids(pool) == []


def test_claim_respects_the_batch_size(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    ids = [enqueue(conn, factories.world(conn)) for _ in range(5)]
    assert claim_ids(pool, batch=2) == ids[:2]
    assert claim_ids(pool, batch=2) == ids[2:4]


def test_row_waiting_for_its_next_attempt_is_not_claimed_early(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    rid = enqueue(conn, factories.world(conn))
    conn.execute("UPDATE agent_hub.invocation_outbox SET next_attempt_at = now() + interval '1 hour' WHERE id = %s", (rid,))
    assert claim_ids(pool) == []


def test_one_run_per_session_in_queue_order(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    a1 = factories.world(conn)
    a2 = factories.next_turn(conn, a1, "second")
    b1 = factories.world(conn)
    ida1, ida2, idb1 = enqueue(conn, a1), enqueue(conn, a2), enqueue(conn, b1)
    assert claim_ids(pool) == [ida1, idb1]
    assert claim_ids(pool) == []  # a2 waits while a1 runs
    wb = WriteBack(pool, outbox_id=ida1, job_id=a1.job_id, session_id=a1.session_id, owner=OWNER, attempt=1)
    assert wb.finish(OutboxStatus.SUCCEEDED, error=None, result={}, status_message="completed")
    assert claim_ids(pool) == [ida2]


def test_later_turn_waits_while_an_earlier_one_is_backing_off(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    a1 = factories.world(conn)
    a2 = factories.next_turn(conn, a1, "second")
    ida1, _ = enqueue(conn, a1), enqueue(conn, a2)
    conn.execute("UPDATE agent_hub.invocation_outbox SET next_attempt_at = now() + interval '1 hour' WHERE id = %s", (ida1,))
    assert claim_ids(pool) == []


def test_expired_lease_is_reclaimed_and_counts_an_attempt(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    rid = enqueue(conn, factories.world(conn))
    assert claim_ids(pool, owner="dead") == [rid]
    assert claim_ids(pool, owner="alive") == []  # lease still live
    conn.execute("UPDATE agent_hub.invocation_outbox SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (rid,))
    claimed = claims.claim(pool, owner="alive", batch=10, lease_s=30)
    assert [(c.id, c.attempts) for c in claimed] == [(rid, 2)]
    assert conn.execute("SELECT lease_owner FROM agent_hub.invocation_outbox").fetchone() == {"lease_owner": "alive"}


def test_concurrent_claimers_skip_each_others_rows_without_waiting(db_url: str, conn: psycopg.Connection) -> None:
    a1 = factories.world(conn)
    a2 = factories.next_turn(conn, a1, "second")
    b1 = factories.world(conn)
    ida1, _, idb1 = enqueue(conn, a1), enqueue(conn, a2), enqueue(conn, b1)
    params = {"owner": "one", "batch": 1, "lease_s": 30, "running": [], "notify": False}
    with psycopg.connect(db_url, row_factory=dict_row) as c1, psycopg.connect(db_url, row_factory=dict_row) as c2:
        c2.execute("SET lock_timeout = '2s'")  # waiting on c1's lock would fail the test, not hang it
        first = c1.execute(query("dispatcher/claim"), params).fetchall()  # uncommitted
        second = c2.execute(query("dispatcher/claim"), {**params, "owner": "two", "batch": 10}).fetchall()
        assert [r["id"] for r in first] == [ida1]
        assert [r["id"] for r in second] == [idb1]  # not a1 (locked), not a2 (a1 is earlier and unfinished)
        c1.commit()
        c2.commit()


def test_cancelled_job_is_claimed_but_not_started(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    w = factories.world(conn)
    enqueue(conn, w)
    conn.execute("""UPDATE "Job" SET "status" = 'CANCELLED' WHERE "id" = %s""", (w.job_id,))
    [c] = claims.claim(pool, owner=OWNER, batch=10, lease_s=30)
    assert not c.job_started and c.job_status_before == "CANCELLED"
    assert conn.execute('SELECT "status"::text FROM "Job" WHERE "id" = %s', (w.job_id,)).fetchone() == {"status": "CANCELLED"}


def test_finish_by_a_dispatcher_that_lost_its_lease_changes_nothing(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    w = factories.world(conn)
    rid = enqueue(conn, w)
    claim_ids(pool, owner="new-owner")
    stale = WriteBack(pool, outbox_id=rid, job_id=w.job_id, session_id=w.session_id, owner="old-owner", attempt=1)
    assert not stale.finish(OutboxStatus.FAILED, error="late", result={}, status_message="failed")
    assert conn.execute("SELECT status::text FROM agent_hub.invocation_outbox").fetchone() == {"status": "running"}
    owner = WriteBack(pool, outbox_id=rid, job_id=w.job_id, session_id=w.session_id, owner="new-owner", attempt=1)
    assert owner.finish(OutboxStatus.SUCCEEDED, error=None, result={"messages": 0}, status_message="completed")
    row = conn.execute("SELECT status::text, finished_at, lease_owner, result FROM agent_hub.invocation_outbox").fetchone()
    assert row is not None and row["status"] == "succeeded" and row["finished_at"] and row["lease_owner"] is None
    # completedAt is the finish's now(), as the outbox's finished_at, in Prisma's UTC TIMESTAMP(3).
    job = conn.execute(
        'SELECT j."status"::text, j."progress", j."completedAt" = (o.finished_at AT TIME ZONE \'UTC\')::timestamp(3) AS '
        'completed_at_finish FROM "Job" j JOIN agent_hub.invocation_outbox o ON o.job_id = j."id" WHERE j."id" = %s', (w.job_id,),
    ).fetchone()
    assert job == {"status": "SUCCEEDED", "progress": 100.0, "completed_at_finish": True}


def test_heartbeat_renews_leases_and_reports_cancelled_jobs_and_lost_rows(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    w1, w2 = factories.world(conn), factories.world(conn)
    r1, r2 = enqueue(conn, w1), enqueue(conn, w2)
    claim_ids(pool, lease_s=5)
    conn.execute("""UPDATE "Job" SET "status" = 'CANCELLED' WHERE "id" = %s""", (w1.job_id,))
    conn.execute("UPDATE agent_hub.invocation_outbox SET lease_owner = 'someone-else' WHERE id = %s", (r2,))
    alive = claims.heartbeat(pool, owner=OWNER, ids=[r1, r2], lease_s=60)
    assert alive == {r1: "CANCELLED"}
    left = conn.execute(
        "SELECT lease_expires_at - now() > interval '30 seconds' AS renewed FROM agent_hub.invocation_outbox WHERE id = %s", (r1,)
    ).fetchone()
    assert left == {"renewed": True}


def test_release_gives_the_row_back_without_counting_the_attempt(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    w = factories.world(conn)
    rid = enqueue(conn, w)
    claim_ids(pool)
    assert claims.release(pool, owner=OWNER, rows=[(rid, 1)]) == [rid]
    row = conn.execute("SELECT status::text, attempts, lease_owner FROM agent_hub.invocation_outbox").fetchone()
    assert row == {"status": "pending", "attempts": 0, "lease_owner": None}
    assert conn.execute('SELECT "status"::text FROM "Job"').fetchone() == {"status": "QUEUED"}
    assert claim_ids(pool) == [rid]


def test_retry_later_reschedules_the_row_and_requeues_the_job(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    _w, _rid, wb = claimed_run(conn, pool)
    assert wb.retry_later(delay_s=60, error="Piston unavailable", status_message="waiting to retry")
    row = conn.execute(
        "SELECT status::text, attempts, last_error, next_attempt_at > now() AS later FROM agent_hub.invocation_outbox"
    ).fetchone()
    assert row == {"status": "pending", "attempts": 1, "last_error": "Piston unavailable", "later": True}
    assert conn.execute('SELECT "status"::text, "statusMessage" FROM "Job"').fetchone() == {
        "status": "QUEUED",
        "statusMessage": "waiting to retry",
    }
    assert claim_ids(pool) == []


def test_a_second_running_row_for_one_session_is_refused_by_the_database(conn: psycopg.Connection) -> None:
    a1 = factories.world(conn)
    a2 = factories.next_turn(conn, a1, "second")
    enqueue(conn, a1)
    enqueue(conn, a2)
    set_running = (
        "UPDATE agent_hub.invocation_outbox SET status = 'running', lease_owner = 'x', "
        "lease_expires_at = now() + interval '1 minute' WHERE job_id = %s"
    )
    conn.execute(set_running, (a1.job_id,))
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(set_running, (a2.job_id,))


def test_messages_written_twice_are_stored_once_with_increasing_timestamps(
    conn: psycopg.Connection, pool: ConnectionPool
) -> None:
    w, _rid, wb = claimed_run(conn, pool)
    assert [wb.message(i, f"m{i}") for i in range(1, 21)] == [True] * 20
    assert [wb.message(i, f"again {i}") for i in range(1, 21)] == [False] * 20  # a re-run repeats seq numbers
    rows = conn.execute(
        'SELECT "id", "content", "timestamp" FROM "ChatMessage" WHERE "role" = \'agent\' ORDER BY "timestamp"'
    ).fetchall()
    assert [r["content"] for r in rows] == [f"m{i}" for i in range(1, 21)]
    assert [r["id"] for r in rows] == [message_id(w.job_id, i) for i in range(1, 21)]
    stamps = [r["timestamp"] for r in rows]
    assert all(a < b for a, b in itertools.pairwise(stamps))


def test_result_json_is_stored_on_the_row(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    _w, _rid, wb = claimed_run(conn, pool)
    wb.finish(OutboxStatus.FAILED, error="agent exited with status 3", result={"exit_code": 3}, status_message="failed")
    row = conn.execute("SELECT result, last_error FROM agent_hub.invocation_outbox").fetchone()
    assert row == {"result": {"exit_code": 3}, "last_error": "agent exited with status 3"}
    job = conn.execute('SELECT "status"::text, "errorMessage" FROM "Job"').fetchone()
    assert job == {"status": "FAILED", "errorMessage": "agent exited with status 3"}


def _child_of(conn: psycopg.Connection, parent_id: int, w: factories.World, owner: str, lease: str) -> tuple[int, str]:
    """A call_agent child row as the dispatcher inserts it: running, leased, no session."""
    job_id = factories.job(conn, w.user_id, w.agent_id, None, status="PROCESSING")
    row = conn.execute(
        "INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, user_id, prompt, status, attempts, lease_owner, "
        "lease_expires_at, started_at, parent_id, depth) VALUES (%s, %s, %s, 'x', 'running', 1, %s, now() + %s::interval, "
        "now(), %s, 1) RETURNING id",
        (job_id, w.agent_id, w.user_id, owner, lease, parent_id),
    ).fetchone()
    assert row is not None
    return int(row["id"]), job_id


def test_expired_child_row_is_never_claimed_as_a_run_of_its_own(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    w = factories.world(conn)
    parent = enqueue(conn, w)
    claim_ids(pool, owner="dead")
    _child_of(conn, parent, w, "dead", "-1 second")
    conn.execute("UPDATE agent_hub.invocation_outbox SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (parent,))
    assert claim_ids(pool, owner="alive") == [parent]  # the caller re-runs; its old child does not


def test_sweep_fails_orphaned_children_and_leaves_live_ones(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    w = factories.world(conn)
    parent = enqueue(conn, w)
    claim_ids(pool)
    orphan, orphan_job = _child_of(conn, parent, w, OWNER, "-1 second")
    live, live_job = _child_of(conn, parent, w, OWNER, "1 minute")
    assert claims.sweep_orphans(pool) == [orphan]
    rows = {r["id"]: r["status"] for r in conn.execute("SELECT id, status::text FROM agent_hub.invocation_outbox").fetchall()}
    assert rows[orphan] == "failed" and rows[live] == "running"
    jobs = {r["id"]: r for r in conn.execute('SELECT "id", "status"::text, "errorMessage" FROM "Job"').fetchall()}
    assert jobs[orphan_job]["status"] == "FAILED" and "calling run stopped" in jobs[orphan_job]["errorMessage"]
    assert jobs[live_job]["status"] == "PROCESSING"
    assert claims.sweep_orphans(pool) == []


def test_claim_takes_the_first_open_row_however_many_finished_rows_the_table_keeps(
    conn: psycopg.Connection, pool: ConnectionPool
) -> None:
    # Finished rows stay for history. Whether the claim walks past them (migration 0004) is a figure the
    # bench reports (bench/micro.py: the claim's plan), not an assertion here.
    conn.execute(
        "INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, session_id, user_id, prompt, status, attempts, finished_at) "
        "SELECT 'old-' || g, 'a', 's-' || g, 'u', 'p', 'succeeded', 1, now() FROM generate_series(1, 3000) g")
    rid = enqueue(conn, factories.world(conn))
    conn.execute(  # and a backlog behind the first open row
        "INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, session_id, user_id, prompt) "
        "SELECT 'new-' || g, 'a', 'n-' || g, 'u', 'p' FROM generate_series(1, 300) g")
    conn.execute("ANALYZE agent_hub.invocation_outbox")
    assert claim_ids(pool, batch=1) == [rid]


def test_finish_writes_the_runs_last_log_lines_with_the_final_state(
    conn: psycopg.Connection, pool: ConnectionPool
) -> None:
    w, _rid, wb = claimed_run(conn, pool)
    assert wb.finish(OutboxStatus.FAILED, error="boom", result={}, status_message="failed",
                     logs=[("error", "boom"), ("info", "run finished: failed")])
    logs = conn.execute('SELECT "level", "message" FROM "JobLog" WHERE "jobId" = %s', (w.job_id,)).fetchall()
    assert sorted((r["level"], r["message"]) for r in logs) == [("error", "boom"), ("info", "run finished: failed")]
    assert conn.execute('SELECT "status"::text FROM "Job" WHERE "id" = %s', (w.job_id,)).fetchone() == {"status": "FAILED"}


def test_a_runs_log_lines_written_in_one_burst_keep_their_order_by_timestamp_alone(
    conn: psycopg.Connection, pool: ConnectionPool
) -> None:
    # "JobLog"."timestamp" has millisecond precision: a burst used to tie, and a reader ordering by time (the
    # hub's page, ops logs) got the lines in any order. No tie-break column here: the times alone must order.
    w, _rid, wb = claimed_run(conn, pool)
    for i in range(40):
        wb.log("info", f"line {i}")
    assert wb.finish(OutboxStatus.SUCCEEDED, error=None, result={}, status_message="completed",
                     logs=[("info", "last but one"), ("info", "run finished: succeeded")])
    rows = conn.execute('SELECT "message", "timestamp" FROM "JobLog" WHERE "jobId" = %s ORDER BY "timestamp"',
                        (w.job_id,)).fetchall()
    assert [r["message"] for r in rows] == [f"line {i}" for i in range(40)] + ["last but one", "run finished: succeeded"]
    assert len({r["timestamp"] for r in rows}) == len(rows)


def test_finish_after_a_lost_lease_writes_nothing_not_even_its_log_lines(
    conn: psycopg.Connection, pool: ConnectionPool
) -> None:
    w = factories.world(conn)
    rid = enqueue(conn, w)
    claim_ids(pool, owner="new-owner")
    stale = WriteBack(pool, outbox_id=rid, job_id=w.job_id, session_id=w.session_id, owner="old-owner", attempt=1)
    assert not stale.finish(OutboxStatus.SUCCEEDED, error=None, result={}, status_message="completed",
                            logs=[("info", "run finished: succeeded")])
    assert conn.execute('SELECT count(*) AS n FROM "JobLog" WHERE "jobId" = %s AND "message" = %s',
                        (w.job_id, "run finished: succeeded")).fetchone() == {"n": 0}
    assert conn.execute("SELECT status::text FROM agent_hub.invocation_outbox").fetchone() == {"status": "running"}


def test_heartbeat_skips_a_row_locked_by_a_commit_in_flight_and_still_counts_it_as_ours(
    conn: psycopg.Connection, pool: ConnectionPool, db_url: str
) -> None:
    # Waiting for the lock could deadlock with the group commit's batch, which locks rows in its own order.
    w1, w2 = factories.world(conn), factories.world(conn)
    r1, r2 = enqueue(conn, w1), enqueue(conn, w2)
    claim_ids(pool, lease_s=5)
    with psycopg.connect(db_url) as other:
        other.execute("SELECT id FROM agent_hub.invocation_outbox WHERE id = %s FOR UPDATE", (r1,))
        alive = claims.heartbeat(pool, owner=OWNER, ids=[r1, r2], lease_s=60)
        other.rollback()
    assert alive == {r1: "PROCESSING", r2: "PROCESSING"}
    renewed = conn.execute(
        "SELECT id, lease_expires_at - now() > interval '30 seconds' AS renewed FROM agent_hub.invocation_outbox ORDER BY id"
    ).fetchall()
    assert renewed == [{"id": r1, "renewed": False}, {"id": r2, "renewed": True}]
