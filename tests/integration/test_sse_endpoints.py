"""The SSE endpoints (GET /api/jobs/<id>/events, /api/sessions/<id>/events) over real sockets, under
Hypercorn in the test process (tests/asgi_server.py), with events appended through the feed's own SQL
(core.feed.insert_events, sql/queries/feed/insert.sql) as the dispatcher will append them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from core import feed
from core.db import Conn, connect
from tests import factories as f
from tests.asgi_server import app_serving
from tests.sse_client import Event, RawStream
from tests.waiting import wait_until

TOKEN = "sse-test-token-0123456789"


@pytest.fixture
def feed_conn(db_url: str) -> Iterator[Conn]:
    """A dict-row connection as the dispatcher has (core.db.connect); each insert is committed."""
    c = connect(db_url, autocommit=True)
    yield c
    c.close()


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[Any, int]]:
    with app_serving(db_url, SSE_KEEPALIVE_S="30") as (app, port):
        yield app, port


def add(c: Conn, *events: feed.FeedEvent) -> list[int]:
    return feed.insert_events(c, list(events))


def a_run(w: f.World, *, text: str = "Hello there", terminal: str = "SUCCEEDED") -> list[feed.FeedEvent]:
    """The events of one run, in the order a streaming answer produces them."""
    j, s, m = w.job_id, w.session_id, f"{w.job_id}-1"
    chunks = [text[i:i + 4] for i in range(0, len(text), 4)]
    return [
        feed.status(j, s, status="PROCESSING"),
        feed.progress(j, s, progress=10, status_message="thinking"),
        feed.log(j, s, level="info", message="fetched 3 documents"),
        *[feed.delta(j, s, message_id=m, index=i, text=c) for i, c in enumerate(chunks)],
        feed.message(j, s, message_id=m, role="agent", content=text, timestamp=datetime(2026, 1, 2, 3, 4, 5, 678000, UTC)),
        feed.status(j, s, status=terminal, error_message="boom" if terminal == "FAILED" else None),
    ]


def ids(events: list[Event]) -> list[int]:
    return [int(e.id) for e in events if e.id is not None]


def test_job_stream_replays_every_event_in_id_order_with_the_issue_shapes_then_ends_after_the_terminal_status(
    conn: psycopg.Connection, feed_conn: Conn, served: tuple[Any, int],
) -> None:
    _, port = served
    w = f.world(conn)
    stored = add(feed_conn, *a_run(w, terminal="FAILED"))
    with RawStream(port, f"/api/jobs/{w.job_id}/events") as s:
        events = [e for e in s.events() if e.event != "comment"]
        assert s.ended  # the response ended by itself after the terminal status
    assert s.status == 200 and s.headers["content-type"].startswith("text/event-stream")
    assert s.headers.get("x-request-id")
    assert ids(events) == stored
    assert [e.event for e in events] == ["status", "progress", "log", "delta", "delta", "delta", "message", "status"]
    data = [e.json() for e in events]
    assert all(d["jobId"] == w.job_id for d in data)
    assert data[0] == {"jobId": w.job_id, "status": "PROCESSING", "errorMessage": None}
    assert data[1] == {"jobId": w.job_id, "progress": 10, "statusMessage": "thinking"}
    assert data[2] == {"jobId": w.job_id, "level": "info", "message": "fetched 3 documents"}
    assert [d["index"] for d in data[3:6]] == [0, 1, 2] and "".join(d["text"] for d in data[3:6]) == "Hello there"
    assert data[6] == {"jobId": w.job_id, "messageId": f"{w.job_id}-1", "role": "agent", "content": "Hello there",
                       "timestamp": "2026-01-02T03:04:05.678Z"}
    assert data[7] == {"jobId": w.job_id, "status": "FAILED", "errorMessage": "boom"}


def test_resuming_with_last_event_id_or_after_sends_every_later_event_once(
    conn: psycopg.Connection, feed_conn: Conn, served: tuple[Any, int],
) -> None:
    _, port = served
    w = f.world(conn)
    stored = add(feed_conn, *a_run(w))
    first_delta = stored[3]
    path = f"/api/jobs/{w.job_id}/events"
    with RawStream(port, path, {"Last-Event-ID": str(first_delta)}) as s:
        assert ids([e for e in s.events() if e.event != "comment"]) == stored[4:]
    with RawStream(port, f"{path}?after={first_delta}") as s:
        assert ids([e for e in s.events() if e.event != "comment"]) == stored[4:]
    # A browser reconnecting keeps the URL's ?after= and sends Last-Event-ID: the header is the newer.
    with RawStream(port, f"{path}?after={stored[0]}", {"Last-Event-ID": str(stored[5])}) as s:
        assert ids([e for e in s.events() if e.event != "comment"]) == stored[6:]


def test_a_job_stream_asked_from_its_terminal_status_ends_at_once_with_nothing(
    conn: psycopg.Connection, feed_conn: Conn, served: tuple[Any, int],
) -> None:
    _, port = served
    w = f.world(conn)
    stored = add(feed_conn, *a_run(w))
    with RawStream(port, f"/api/jobs/{w.job_id}/events", {"Last-Event-ID": str(stored[-1])}) as s:
        assert [e for e in s.events() if e.event != "comment"] == []
        assert s.ended


def test_a_terminal_status_appended_while_a_job_stream_is_open_ends_it(
    conn: psycopg.Connection, feed_conn: Conn, db_url: str,
) -> None:
    w = f.world(conn)
    # No keep-alive within the test's deadline: only the live terminal status can end the stream.
    with app_serving(db_url, SSE_KEEPALIVE_S="3600") as (_, port), RawStream(port, f"/api/jobs/{w.job_id}/events") as s:
        first = add(feed_conn, feed.status(w.job_id, w.session_id, status="PROCESSING"))
        assert ids(s.until(lambda e: e.event == "status")) == first
        last = add(feed_conn, feed.status(w.job_id, w.session_id, status="CANCELLED"))
        assert ids([e for e in s.events() if e.event != "comment"]) == last
        assert s.ended


def test_a_job_stream_goes_on_past_a_terminal_status_followed_by_a_rerun(
    conn: psycopg.Connection, feed_conn: Conn, served: tuple[Any, int],
) -> None:
    # `dispatcher replay` runs a FAILED job again: its stream must not stop at the old FAILED.
    _, port = served
    w = f.world(conn)
    first = add(feed_conn, *a_run(w, terminal="FAILED"))
    second = add(feed_conn, *a_run(w, text="again"))
    with RawStream(port, f"/api/jobs/{w.job_id}/events") as s:
        assert ids([e for e in s.events() if e.event != "comment"]) == first + second


def test_live_events_of_two_jobs_reach_an_open_session_stream_once_each_and_a_reconnect_misses_none(
    conn: psycopg.Connection, db_url: str, served: tuple[Any, int],
) -> None:
    _, port = served
    w = f.world(conn)
    other_job = f.job(conn, w.user_id, w.agent_id, w.session_id)
    per_writer = 60
    written: list[int] = []
    lock = threading.Lock()

    def writer(job_id: str) -> None:
        # Each batch in its own transaction, two writers at once: ids interleave as commits race.
        with connect(db_url) as c:
            for i in range(0, per_writer, 3):
                with c.transaction():
                    got = feed.insert_events(c, [feed.delta(job_id, w.session_id, message_id=f"{job_id}-m",
                                                            index=i + k, text=f"{i + k}") for k in range(3)])
                with lock:
                    written.extend(got)

    path = f"/api/sessions/{w.session_id}/events"
    with RawStream(port, path) as s:
        s.read_head()
        threads = [threading.Thread(target=writer, args=(j,)) for j in (w.job_id, other_job)]
        for t in threads:
            t.start()
        # Read half, then leave (a dropped connection), and resume from the last id read.
        first = s.until(lambda e: e.event == "delta" and int(e.json()["text"]) >= per_writer // 2)
    for t in threads:
        t.join(30)
    with RawStream(port, path, {"Last-Event-ID": first[-1].id or ""}) as s:
        rest = s.until(lambda e: int(e.id or 0) == max(written))
    got = ids(first) + ids(rest)
    assert got == sorted(written)  # every event once, in id order, across the reconnect
    assert {e.json()["jobId"] for e in first + rest} == {w.job_id, other_job}


def test_unknown_job_or_session_is_a_404_json_error(served: tuple[Any, int]) -> None:
    _, port = served
    for kind, code, field in (("jobs", "job_not_found", "jobId"), ("sessions", "session_not_found", "sessionId")):
        with RawStream(port, f"/api/{kind}/no-such-id/events") as s:
            s.read_head()
            assert s.status == 404 and s.headers["content-type"] == "application/json"
            body = json.loads(s.body())
            assert (body["error"], body["field"]) == (code, field), body


def test_a_session_with_no_events_yet_is_open_and_says_keep_alive_while_idle(
    conn: psycopg.Connection, db_url: str,
) -> None:
    w = f.world(conn)
    with app_serving(db_url, SSE_KEEPALIVE_S="0.2") as (_, port), RawStream(port, f"/api/sessions/{w.session_id}/events") as s:
        comments = []
        for ev in s.events():
            assert ev.event == "comment", ev
            comments.append(ev.data)
            if len(comments) == 2:
                break
        assert comments == ["keep-alive", "keep-alive"]


@pytest.mark.parametrize(("headers", "query", "field"), [
    ({"Last-Event-ID": "abc"}, "", "Last-Event-ID"),
    ({}, "?after=-1", "after"),
    ({}, "?after=99999999999999999999", "after"),
])
def test_a_bad_resume_id_is_a_400_naming_it(
    conn: psycopg.Connection, served: tuple[Any, int], headers: dict[str, str], query: str, field: str,
) -> None:
    _, port = served
    w = f.world(conn)
    with RawStream(port, f"/api/jobs/{w.job_id}/events{query}", headers) as s:
        s.read_head()
        body = json.loads(s.body())
    assert (s.status, body["error"], body["field"]) == (400, "invalid_field", field)


def test_streams_need_the_same_bearer_token_as_the_invoke_endpoint(conn: psycopg.Connection, db_url: str) -> None:
    w = f.world(conn)
    path = f"/api/sessions/{w.session_id}/events"
    with app_serving(db_url, token=TOKEN) as (_, port):
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN}):
            with RawStream(port, path, headers) as s:
                s.read_head()
                assert s.status == 401, headers
                assert s.headers["www-authenticate"].startswith("Bearer")
                assert json.loads(s.body())["error"] == "unauthorized"
        with RawStream(port, path, {"Authorization": f"Bearer {TOKEN}"}) as s:
            assert s.read_head().status == 200
        # and the unknown-id answer is no oracle for the unauthenticated
        with RawStream(port, "/api/jobs/no-such-id/events") as s:
            assert s.read_head().status == 401


def test_other_methods_on_a_stream_route_are_405_with_allow(served: tuple[Any, int], conn: psycopg.Connection) -> None:
    import requests

    _, port = served
    resp = requests.post(f"http://127.0.0.1:{port}/api/jobs/x/events", json={}, timeout=10)
    assert (resp.status_code, resp.json()["error"], resp.headers["Allow"]) == (405, "method_not_allowed", "GET")


def test_a_job_finished_in_the_hub_without_a_feed_status_ends_with_the_job_rows_status(
    conn: psycopg.Connection, feed_conn: Conn, served: tuple[Any, int],
) -> None:
    # Next.js cancelled it before it ran: the Job row says CANCELLED; the feed never will.
    _, port = served
    w = f.world(conn)
    logged = add(feed_conn, feed.log(w.job_id, w.session_id, level="info", message="queued"))
    conn.execute('UPDATE "Job" SET "status" = \'CANCELLED\' WHERE "id" = %s', (w.job_id,))
    with RawStream(port, f"/api/jobs/{w.job_id}/events") as s:
        events = [e for e in s.events() if e.event != "comment"]
        assert s.ended
    assert ids(events) == logged
    assert (events[-1].event, events[-1].id) == ("status", None)  # nothing durable to resume from
    assert events[-1].json() == {"jobId": w.job_id, "status": "CANCELLED", "errorMessage": None}


def test_a_client_that_leaves_frees_its_stream(conn: psycopg.Connection, served: tuple[Any, int]) -> None:
    app, port = served
    w = f.world(conn)
    s = RawStream(port, f"/api/sessions/{w.session_id}/events").read_head()
    wait_until(lambda: app.hub.streams == 1, what="the stream to be open")
    s.close()
    wait_until(lambda: app.hub.streams == 0, what="the stream to be freed after its client left")


def test_losing_the_database_ends_open_streams_with_an_event_saying_so(
    conn: psycopg.Connection, feed_conn: Conn, served: tuple[Any, int],
) -> None:
    app, port = served
    w = f.world(conn)
    stored = add(feed_conn, feed.status(w.job_id, w.session_id, status="PROCESSING"))
    with RawStream(port, f"/api/sessions/{w.session_id}/events") as s:
        s.until(lambda e: e.id == str(stored[0]))
        wait_until(lambda: app.hub.listening.is_set(), what="the LISTEN connection")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = 'agent-hub-streams-listen' AND datname = current_database()")
        last = s.until(lambda e: e.event == "error")[-1]
        assert list(s.events()) == [] and s.ended
    assert last.id is None
    assert last.json()["error"] == "database_unavailable"
    assert last.json()["lastEventId"] == stored[0]  # where to resume


def test_a_client_that_reads_nothing_is_dropped_with_a_last_event_and_resumes_from_it(
    conn: psycopg.Connection, feed_conn: Conn, db_url: str,
) -> None:
    w = f.world(conn)
    big = "x" * 20_000
    with app_serving(db_url, SSE_SLOW_CLIENT_S="0.5") as (app, port):
        s = RawStream(port, f"/api/jobs/{w.job_id}/events", rcvbuf=4096).read_head()
        wait_until(lambda: app.hub.streams == 1, what="the stream to be open")
        # Far more than the socket buffers hold, and the client reads none of it.
        stored: list[int] = []
        for batch in range(40):
            stored += add(feed_conn, *[feed.delta(w.job_id, w.session_id, message_id="m", index=batch * 10 + i, text=big)
                                       for i in range(10)])
        stored += add(feed_conn, feed.status(w.job_id, w.session_id, status="SUCCEEDED"))
        wait_until(lambda: app.hub.streams == 0, what="the slow client to be dropped")
        events = [e for e in s.events() if e.event != "comment"]
        s.close()
        assert s.ended
        last = events[-1]
        assert (last.event, last.id) == ("error", None), [e.event for e in events[-3:]]
        assert last.json()["error"] == "slow_client"
        got = ids(events)
        assert got == stored[:len(got)] and len(got) < len(stored)  # a prefix: nothing skipped before the drop
        assert last.json()["lastEventId"] == got[-1]
        with RawStream(port, f"/api/jobs/{w.job_id}/events", {"Last-Event-ID": str(got[-1])}) as again:
            rest = ids([e for e in again.events() if e.event != "comment"])
    assert got + rest == stored
