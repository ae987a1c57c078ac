"""The hub_events notifier (dispatcher/events.py) on real Postgres: order, reconnect, overflow."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from dispatcher.events import EventNotifier, status_event
from tests.waiting import wait_until

APP = "test-hub-events"


@pytest.fixture
def listen(db_url: str) -> Iterator[psycopg.Connection]:
    c = psycopg.connect(db_url, autocommit=True)
    c.execute("LISTEN hub_events")
    yield c
    c.close()


def received(conn: psycopg.Connection, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for note in conn.notifies(timeout=0.2, stop_after=n - len(got)):
            got.append(json.loads(note.payload))
    return got


def notifier_pids(conn: psycopg.Connection) -> list[int]:
    """The notifier's backends in this test's own database (another test process may use the same name)."""
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
                        (APP,)).fetchall()
    return [r[0] for r in rows]


def test_a_batch_is_delivered_in_emit_order_even_with_repeated_payloads(db_url: str, listen: psycopg.Connection) -> None:
    notifier = EventNotifier(db_url, application_name=APP)
    # Queued before the thread starts, so they go out as one batch (up to the repeat below).
    events = [status_event(f"job-{i}", "s", "PROCESSING") for i in range(300)]
    # The same payload twice in one transaction would be folded into one by Postgres: it must not be.
    events += [status_event("job-x", "s", "PROCESSING"), status_event("job-x", "s", "QUEUED"),
               status_event("job-x", "s", "PROCESSING")]
    for e in events:
        notifier.emit(e)
    notifier.start()
    try:
        assert notifier.flush(10)
        assert received(listen, len(events)) == events
        assert (notifier.sent, notifier.lost, notifier.dropped) == (len(events), 0, 0)
    finally:
        notifier.stop()


def test_the_notifier_reconnects_after_its_connection_is_killed(db_url: str, listen: psycopg.Connection) -> None:
    notifier = EventNotifier(db_url, application_name=APP).start()
    try:
        notifier.emit(status_event("before", None, "PROCESSING"))
        assert notifier.flush(10)
        [old] = notifier_pids(listen)
        assert listen.execute("SELECT pg_terminate_backend(%s)", (old,)).fetchone() == (True,)
        # The backend ends asynchronously: only once it has gone must the next send meet a dead connection.
        wait_until(lambda: old not in notifier_pids(listen), what="the killed backend to end")
        notifier.emit(status_event("after", None, "SUCCEEDED"))
        assert notifier.flush(10)
        assert [e["job_id"] for e in received(listen, 2)] == ["before", "after"]
        assert notifier.lost == 0
        assert len(notifier_pids(listen)) == 1  # on a new connection
    finally:
        notifier.stop()


def test_a_full_queue_drops_the_oldest_events_and_counts_them(db_url: str, listen: psycopg.Connection) -> None:
    notifier = EventNotifier(db_url, max_queue=5, application_name=APP)
    for i in range(8):  # the thread is not started yet: nothing drains the queue
        notifier.emit(status_event(f"job-{i}", None, "QUEUED"))
    assert notifier.dropped == 3
    notifier.start()
    try:
        assert notifier.flush(10)
        assert [e["job_id"] for e in received(listen, 5)] == [f"job-{i}" for i in range(3, 8)]
    finally:
        notifier.stop()


def test_events_that_cannot_be_sent_are_dropped_and_counted_after_a_bounded_retry() -> None:
    notifier = EventNotifier("postgresql://nobody@127.0.0.1:1/none", retry_s=0.3, application_name=APP).start()
    try:
        for i in range(3):
            notifier.emit(status_event(f"job-{i}", None, "QUEUED"))
        assert notifier.flush(15)
        assert notifier.lost == 3 and notifier.sent == 0
    finally:
        notifier.stop()
