"""The feed's storage (agent_hub.feed_event, sql/queries/feed/insert.sql through core.feed) on real Postgres:
order, the NOTIFY that wakes the web's streams, and ids that follow commit order within a session."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import psycopg
import pytest

from core import feed
from core.db import Conn, connect
from dispatcher.events import EventNotifier
from tests.waiting import wait_until


@pytest.fixture
def writer(db_url: str) -> Iterator[Conn]:
    c = connect(db_url)
    yield c
    c.close()


def test_a_batch_is_stored_in_the_given_order_and_its_ids_returned(writer: Conn) -> None:
    events = [feed.status("j1", "s1", status="PROCESSING"), feed.delta("j1", "s1", message_id="m", index=0, text="a"),
              feed.log("j2", None, level="info", message="child")]
    with writer.transaction():
        ids = feed.insert_events(writer, events)
    assert ids == sorted(ids) and len(ids) == 3
    rows = writer.execute("SELECT id, job_id, session_id, kind, payload FROM agent_hub.feed_event ORDER BY id").fetchall()
    assert [(r["id"], r["job_id"], r["session_id"], r["kind"], r["payload"]) for r in rows] == [
        (i, e.job_id, e.session_id, str(e.kind), e.payload) for i, e in zip(ids, events, strict=True)]
    assert feed.insert_events(writer, []) == []


def test_the_commit_wakes_listeners_once_per_session_and_job_with_the_highest_id(writer: Conn, db_url: str) -> None:
    with connect(db_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {feed.CHANNEL}")
        with writer.transaction():
            ids = feed.insert_events(writer, [feed.log("j1", "s1", level="info", message=str(i)) for i in range(3)]
                                     + [feed.log("j2", None, level="info", message="x")])
        got = sorted((json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=2)), key=lambda p: p["id"])
    assert got == [{"sessionId": "s1", "jobId": "j1", "id": ids[2]}, {"sessionId": None, "jobId": "j2", "id": ids[3]}]


def test_without_notify_nothing_wakes_until_the_events_sender_sends_the_same_payloads(writer: Conn, db_url: str) -> None:
    with connect(db_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {feed.CHANNEL}")
        events = [feed.progress("j1", "s1", progress=5)]
        with writer.transaction():
            ids = feed.insert_events(writer, events, notify=False)
        assert list(listener.notifies(timeout=0.5)) == []
        sender = EventNotifier(db_url).start()  # what the dispatcher sends the wake-ups with, after the commit
        try:
            sender.emit_feed(feed.wake_payloads(events, ids))
            assert sender.flush(5)
        finally:
            sender.stop()
        got = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
    assert got == [{"sessionId": "s1", "jobId": "j1", "id": ids[0]}]


def test_a_rolled_back_batch_leaves_no_event_and_wakes_nobody(writer: Conn, db_url: str) -> None:
    with connect(db_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {feed.CHANNEL}")
        feed.insert_events(writer, [feed.log("j1", "s1", level="info", message="never")])
        writer.rollback()
        assert list(listener.notifies(timeout=0.5)) == []
    assert writer.execute("SELECT count(*) AS n FROM agent_hub.feed_event").fetchone() == {"n": 0}


def test_a_payload_naming_another_job_is_refused(writer: Conn) -> None:
    bad = feed.FeedEvent("j1", "s1", feed.EventKind.LOG, {"jobId": "j2", "level": "info", "message": "x"})
    with pytest.raises(psycopg.errors.CheckViolation):
        feed.insert_events(writer, [bad])


def _waiting_on_a_lock(db_url: str, pid: int) -> bool:
    with connect(db_url, autocommit=True) as c:
        row = c.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return bool(row and row["wait_event_type"] == "Lock")


def test_a_second_writer_of_the_same_session_waits_for_the_first_to_commit_so_ids_follow_commit_order(
    writer: Conn, db_url: str,
) -> None:
    # Without the lock the second writer would draw a higher id, commit first, and a stream reading
    # "after id N" between the two commits would skip the first writer's smaller id forever.
    first = feed.insert_events(writer, [feed.log("j1", "s1", level="info", message="first")])  # open, not committed
    second: list[int] = []
    other_session: list[int] = []
    with connect(db_url) as c2, connect(db_url) as c3:
        pid = c2.info.backend_pid
        t = threading.Thread(target=lambda: (second.extend(feed.insert_events(c2, [
            feed.log("j2", "s1", level="info", message="second")])), c2.commit()))
        t.start()
        wait_until(lambda: _waiting_on_a_lock(db_url, pid), what="the second writer of s1 to wait on the first")
        other_session += feed.insert_events(c3, [feed.log("j3", "s2", level="info", message="elsewhere")])
        c3.commit()  # another session's writer is not held back
        assert second == []
        writer.commit()
        t.join(30)
    assert second and second[0] > first[0]
