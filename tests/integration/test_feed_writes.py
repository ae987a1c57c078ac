"""The dispatcher's writes append their feed events (agent_hub.feed_event) in the SAME transaction as the change
each one announces, and a write the lease fence refused appends none. "Same transaction" is checked with xmin:
the feed row and the row it announces were written by one transaction id."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from dispatcher import claim as claims
from dispatcher import ops_store
from dispatcher.groupcommit import GroupCommitter
from dispatcher.states import OutboxStatus
from dispatcher.writeback import WriteBack, message_id
from tests import factories

OWNER = "feed-owner"


def feed(conn: psycopg.Connection, job_id: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT id, job_id, session_id, kind, payload, xmin::text AS xid FROM agent_hub.feed_event"
    if job_id is None:
        return conn.execute(sql + " ORDER BY id").fetchall()
    return conn.execute(sql + " WHERE job_id = %s ORDER BY id", (job_id,)).fetchall()


def running(conn: psycopg.Connection, pool: ConnectionPool, owner: str = OWNER) -> tuple[factories.World, int]:
    w = factories.world(conn)
    rid = factories.enqueue(conn, w)
    [c] = claims.claim(pool, owner=owner, batch=1, lease_s=30)
    assert c.id == rid
    return w, rid


def wb_for(pool: ConnectionPool, w: factories.World, rid: int, *, owner: str = OWNER,
           committer: GroupCommitter | None = None) -> WriteBack:
    return WriteBack(pool, outbox_id=rid, job_id=w.job_id, session_id=w.session_id, owner=owner, attempt=1,
                     committer=committer)


@pytest.fixture
def committer(db_url: str) -> Iterator[GroupCommitter]:
    wakes: list[str] = []
    gc = GroupCommitter(db_url, writers=2, retry_s=10, on_feed=wakes.extend).start()
    gc.wakes = wakes  # type: ignore[attr-defined]
    yield gc
    gc.stop(5)


def test_claim_appends_the_jobs_processing_status_in_the_claims_transaction(
        conn: psycopg.Connection, pool: ConnectionPool) -> None:
    w, _ = running(conn, pool)
    [event] = feed(conn, w.job_id)
    job = conn.execute('SELECT xmin::text AS xid FROM "Job" WHERE "id" = %s', (w.job_id,)).fetchone()
    assert event["kind"] == "status" and event["session_id"] == w.session_id
    assert event["payload"] == {"jobId": w.job_id, "status": "PROCESSING", "errorMessage": None}
    assert job is not None and event["xid"] == job["xid"]


@pytest.mark.parametrize("handed_over", [False, True], ids=["notify-with-commit", "wake-after-commit"])
def test_claim_wakes_the_feed_once_with_its_event_id_either_in_its_commit_or_through_wake(
        conn: psycopg.Connection, pool: ConnectionPool, db_url: str, handed_over: bool) -> None:
    w = factories.world(conn)
    factories.enqueue(conn, w)
    woken: list[str] = []
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN hub_feed")
        [c] = claims.claim(pool, owner=OWNER, batch=1, lease_s=30, wake=woken.extend if handed_over else None)
        notified = [n.payload for n in listener.notifies(timeout=0.5 if handed_over else 5, stop_after=1)]
    [event] = feed(conn, w.job_id)
    expected = [{"sessionId": w.session_id, "jobId": w.job_id, "id": event["id"]}]
    assert c.feed_id == event["id"]
    got = ([json.loads(p) for p in woken], [json.loads(p) for p in notified])
    assert got == ((expected, []) if handed_over else ([], expected))


@pytest.mark.parametrize("shared_writer", [False, True], ids=["own-connection", "group-commit"])
def test_message_progress_log_and_finish_each_append_their_event_in_their_own_transaction(
        conn: psycopg.Connection, pool: ConnectionPool, committer: GroupCommitter, shared_writer: bool) -> None:
    w, rid = running(conn, pool)
    wb = wb_for(pool, w, rid, committer=committer if shared_writer else None)
    assert wb.message(1, "hello there")
    wb.progress(40, "thinking")
    wb.log("info", "agent: a line")
    assert wb.finish(OutboxStatus.SUCCEEDED, error=None, result={}, status_message="completed",
                     logs=[("info", "run finished")])
    events = feed(conn, w.job_id)
    assert [e["kind"] for e in events] == ["status", "message", "progress", "log", "log", "status"]
    msg = conn.execute('SELECT "content", "timestamp", xmin::text AS xid FROM "ChatMessage" WHERE "id" = %s',
                       (message_id(w.job_id, 1),)).fetchone()
    assert msg is not None
    stamp = msg["timestamp"].strftime("%Y-%m-%dT%H:%M:%S.") + f"{msg['timestamp'].microsecond // 1000:03d}Z"
    assert events[1]["payload"] == {"jobId": w.job_id, "messageId": message_id(w.job_id, 1), "role": "agent",
                                    "content": "hello there", "timestamp": stamp}
    assert events[1]["xid"] == msg["xid"]
    assert events[2]["payload"] == {"jobId": w.job_id, "progress": 40, "statusMessage": "thinking"}
    log_rows = conn.execute('SELECT "message", xmin::text AS xid FROM "JobLog" WHERE "jobId" = %s ORDER BY "timestamp"',
                            (w.job_id,)).fetchall()
    assert [e["payload"]["message"] for e in events[3:5]] == [r["message"] for r in log_rows]
    assert [e["xid"] for e in events[3:5]] == [r["xid"] for r in log_rows]
    job = conn.execute('SELECT xmin::text AS xid FROM "Job" WHERE "id" = %s', (w.job_id,)).fetchone()
    assert job is not None and events[5]["xid"] == job["xid"] == events[4]["xid"]  # finish: its logs, then status
    assert events[5]["payload"] == {"jobId": w.job_id, "status": "SUCCEEDED", "errorMessage": None}
    assert all(e["session_id"] == w.session_id for e in events)
    if shared_writer:  # the wake-ups went to on_feed after the commits, not NOTIFYed in the transactions
        assert committer.wakes  # type: ignore[attr-defined]


def test_a_failed_finish_carries_its_error_and_retry_later_appends_queued(
        conn: psycopg.Connection, pool: ConnectionPool) -> None:
    w, rid = running(conn, pool)
    assert wb_for(pool, w, rid).retry_later(delay_s=0, error="piston down", status_message="waiting to retry")
    assert [e["payload"]["status"] for e in feed(conn, w.job_id)] == ["PROCESSING", "QUEUED"]
    [c] = claims.claim(pool, owner=OWNER, batch=1, lease_s=30)
    wb = WriteBack(pool, outbox_id=rid, job_id=w.job_id, session_id=w.session_id, owner=OWNER, attempt=c.attempts)
    assert wb.finish(OutboxStatus.FAILED, error="boom", result={}, status_message="failed")
    statuses = [e["payload"] for e in feed(conn, w.job_id)]
    assert statuses[-1] == {"jobId": w.job_id, "status": "FAILED", "errorMessage": "boom"}
    assert [s["status"] for s in statuses] == ["PROCESSING", "QUEUED", "PROCESSING", "FAILED"]


def test_release_appends_queued(conn: psycopg.Connection, pool: ConnectionPool) -> None:
    w, rid = running(conn, pool)
    assert claims.release(pool, owner=OWNER, rows=[(rid, 1)]) == [rid]
    assert [e["payload"]["status"] for e in feed(conn, w.job_id)] == ["PROCESSING", "QUEUED"]


def test_writes_the_lease_fence_refused_append_no_feed_rows(
        conn: psycopg.Connection, pool: ConnectionPool, committer: GroupCommitter) -> None:
    w, rid = running(conn, pool, owner="new-owner")
    before = feed(conn)
    for shared in (None, committer):
        stale = wb_for(pool, w, rid, owner="old-owner", committer=shared)
        assert not stale.message(1, "late")
        stale.progress(50, "late")
        stale.log("info", "late")
        stale.deltas(message_id(w.job_id, 1), 0, ["la", "te"])
        assert not stale.retry_later(delay_s=0, error="late", status_message="late")
        assert not stale.finish(OutboxStatus.FAILED, error="late", result={}, status_message="failed",
                                logs=[("error", "late")])
    wb_for(pool, w, rid, owner="new-owner", committer=committer).log("info", "barrier")  # same writer: after them
    committer.submit([("SELECT 1", {})], key=rid)
    assert [e["payload"].get("message") for e in feed(conn)[len(before):]] == ["barrier"]


def test_deltas_append_indexed_chunks_of_the_messages_future_id(
        conn: psycopg.Connection, pool: ConnectionPool, committer: GroupCommitter) -> None:
    w, rid = running(conn, pool)
    wb = wb_for(pool, w, rid, committer=committer)
    mid = message_id(w.job_id, 1)
    wb.deltas(mid, 0, ["Hel", "lo"])
    wb.deltas(mid, 2, [" world"])
    assert wb.message(1, "Hello world")
    events = feed(conn, w.job_id)[1:]
    assert [(e["kind"], e["payload"].get("index"), e["payload"].get("text")) for e in events] == [
        ("delta", 0, "Hel"), ("delta", 1, "lo"), ("delta", 2, " world"), ("message", None, None)]
    assert all(e["payload"]["messageId"] == mid for e in events)


def test_a_operator_cancel_appends_cancelled_in_the_cancels_transaction(
        conn: psycopg.Connection, pool: ConnectionPool) -> None:
    w, rid = running(conn, pool)
    waiting = factories.world(conn)
    wid = factories.enqueue(conn, waiting)
    with conn.transaction():
        announced = ops_store.cancel_pending(conn, [wid], "op") + ops_store.cancel_running(conn, [rid], "op", "why")
        ops_store.feed_statuses(conn, announced)
    assert [e["payload"]["status"] for e in feed(conn, w.job_id)] == ["PROCESSING", "CANCELLED"]
    assert [e["payload"]["status"] for e in feed(conn, waiting.job_id)] == ["CANCELLED"]


def test_group_commit_batches_spanning_many_sessions_commit_without_deadlock_and_ids_follow_each_sessions_order(
        conn: psycopg.Connection, pool: ConnectionPool, committer: GroupCommitter) -> None:
    runs = [running(conn, pool) for _ in range(6)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        w, rid = runs[i % len(runs)]
        rng = random.Random(i)
        try:
            for n in range(15):
                WriteBack(pool, outbox_id=rid, job_id=w.job_id, session_id=w.session_id, owner=OWNER, attempt=1,
                          committer=committer).progress(rng.randint(0, 99), f"{i}:{n}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    progress = [e for e in feed(conn) if e["kind"] == "progress"]
    assert len(progress) == 12 * 15
    for i in range(12):  # each caller's writes in its own order
        mine = [int(e["payload"]["statusMessage"].split(":")[1]) for e in progress
                if e["payload"]["statusMessage"].startswith(f"{i}:")]
        assert mine == list(range(15))
