"""The SSE streams and slow clients against the real web process (`python -m ingress`, Hypercorn, two
workers), read by a real SSE client: `requests` streaming the raw text/event-stream, parsed as a browser's
EventSource does (tests/sse_client.py). Events are appended with the feed's own SQL (core.feed)."""

from __future__ import annotations

import select
import signal
import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from core import feed
from core.db import Conn, connect
from tests import factories as f
from tests import pg
from tests.e2e.test_web_process import WebProcess, process_env
from tests.sse_client import Event, parse
from tests.waiting import wait_until

TOKEN = "e2e-sse-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IDLE_TIMEOUT_S = 3
HALF_SENT = 1000


@pytest.fixture(scope="module")
def server_db(pg_server_url: str, template_name: str) -> Iterator[str]:
    name, url = pg.create_from_template(pg_server_url, template_name)
    yield url
    pg.drop(pg_server_url, name)


@pytest.fixture
def conn(server_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(server_db, autocommit=True, row_factory=dict_row) as c:
        yield c


@pytest.fixture(scope="module")
def web(server_db: str) -> Iterator[WebProcess]:
    proc = WebProcess(process_env(DATABASE_URL=server_db, INGRESS_TOKEN=TOKEN, WEB_IDLE_TIMEOUT_S=str(IDLE_TIMEOUT_S),
                                  SSE_KEEPALIVE_S="1"))
    try:
        proc.wait_healthy()
        yield proc
    finally:
        assert proc.stop() == 0


@pytest.fixture
def writer(server_db: str) -> Iterator[Conn]:
    c = connect(server_db, autocommit=True)
    yield c
    c.close()


def sse(resp: requests.Response) -> Iterator[Event]:
    """The response's events as an EventSource sees them (comments left out)."""
    lines = resp.iter_lines(chunk_size=1, decode_unicode=True)
    return (e for e in parse(line for line in lines if line is not None) if e.event != "comment")


def test_a_real_sse_client_gets_deltas_live_then_the_message_and_status_and_a_late_client_resumes_once(
    web: WebProcess, conn: psycopg.Connection, writer: Conn,
) -> None:
    w = f.world(conn)
    j, s, m = w.job_id, w.session_id, f"{w.job_id}-1"
    chunks = ["Hel", "lo, ", "wor", "ld"]
    url = f"{web.url}/api/jobs/{j}/events"
    with requests.get(url, headers=AUTH, stream=True, timeout=30) as resp:
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        events = sse(resp)
        started = feed.insert_events(writer, [feed.status(j, s, status="PROCESSING")])
        assert next(events).id == str(started[0])
        delta_ids = []
        for i, text in enumerate(chunks):  # each delta is read before the next is written: live, not replayed
            delta_ids += feed.insert_events(writer, [feed.delta(j, s, message_id=m, index=i, text=text)])
            got = next(events)
            assert (got.event, got.id, got.json()["text"]) == ("delta", str(delta_ids[-1]), text)
        tail = feed.insert_events(writer, [
            feed.message(j, s, message_id=m, role="agent", content="".join(chunks), timestamp=datetime.now(UTC)),
            feed.status(j, s, status="SUCCEEDED")])
        rest = list(events)  # the stream ends by itself after the terminal status
    assert [(e.event, e.id) for e in rest] == [("message", str(tail[0])), ("status", str(tail[1]))]
    assert rest[0].json()["content"] == "Hello, world"

    with requests.get(url, headers={**AUTH, "Last-Event-ID": str(delta_ids[0])}, stream=True, timeout=30) as late:
        again = list(sse(late))
    assert [e.id for e in again] == [str(i) for i in delta_ids[1:] + tail]


def test_progress_reaches_an_open_session_stream_and_keep_alives_flow_while_idle(
    web: WebProcess, conn: psycopg.Connection, writer: Conn,
) -> None:
    w = f.world(conn)
    with requests.get(f"{web.url}/api/sessions/{w.session_id}/events", headers=AUTH, stream=True, timeout=30) as resp:
        lines = resp.iter_lines(chunk_size=1, decode_unicode=True)
        everything = parse(line for line in lines if line is not None)
        assert next(everything) == Event(None, "comment", "keep-alive")  # SSE_KEEPALIVE_S=1 while nothing happens
        ids = feed.insert_events(writer, [feed.progress(w.job_id, w.session_id, progress=40, status_message="half")])
        got = next(e for e in everything if e.event != "comment")
    assert (got.id, got.event, got.json()) == (str(ids[0]), "progress",
                                               {"jobId": w.job_id, "progress": 40, "statusMessage": "half"})


def test_streams_answer_401_without_the_token_and_404_for_an_unknown_job(web: WebProcess) -> None:
    bare = requests.get(f"{web.url}/api/sessions/x/events", timeout=10)
    assert (bare.status_code, bare.json()["error"]) == (401, "unauthorized")
    unknown = requests.get(f"{web.url}/api/jobs/{f.new_id()}/events", headers=AUTH, timeout=10)
    assert (unknown.status_code, unknown.json()["error"]) == (404, "job_not_found")


def _half_sent(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /api/agents/x/invoke HTTP/1.1\r\nHost: slow\r\nContent-Type: appl")  # and never the rest
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    ready, _, _ = select.select([sock], [], [], 0)
    if not ready:
        return False
    try:
        return sock.recv(1024) == b""
    except OSError:  # reset: closed too
        return True


def test_a_thousand_half_sent_request_heads_neither_delay_an_invoke_nor_stay_open_past_the_idle_timeout(
    web: WebProcess, conn: psycopg.Connection,
) -> None:
    socks: list[socket.socket] = []
    try:
        for _ in range(HALF_SENT):
            socks.append(_half_sent(web.port))
        w = f.world(conn)
        # With a thread per connection (gunicorn gthread before), this POST waited behind them and timed out.
        resp = requests.post(web.url + w.invoke_path, json=w.invoke_body(), headers=AUTH, timeout=5)
        assert resp.status_code == 202, resp.text
        wait_until(lambda: all(_closed_by_server(s) for s in socks), timeout=IDLE_TIMEOUT_S + 60,
                   what=f"the server to drop all {HALF_SENT} half-sent requests after WEB_IDLE_TIMEOUT_S")
    finally:
        for s in socks:
            s.close()


def test_a_stream_held_open_does_not_hold_back_an_invoke_on_a_one_worker_process(
    server_db: str, conn: psycopg.Connection,
) -> None:
    # One worker, its Flask pool of one thread: the open streams must cost no thread.
    single = WebProcess(process_env(DATABASE_URL=server_db, WEB_CONCURRENCY="1", WEB_THREADS="1"))
    streams: list[requests.Response] = []
    try:
        single.wait_healthy()
        w = f.world(conn)
        for _ in range(20):
            streams.append(requests.get(f"{single.url}/api/sessions/{w.session_id}/events", stream=True, timeout=30))
        assert all(r.status_code == 200 for r in streams)
        resp = requests.post(single.url + w.invoke_path, json=w.invoke_body(), timeout=10)
        assert resp.status_code == 202, resp.text
    finally:
        for r in streams:
            r.close()
        assert single.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_ends_open_streams_with_a_last_event_and_the_process_exits_cleanly(
    server_db: str, conn: psycopg.Connection, workers: str,
) -> None:
    # A deploy: clients are told to resume elsewhere instead of being cut off after the grace period.
    proc = WebProcess(process_env(DATABASE_URL=server_db, WEB_CONCURRENCY=workers))
    try:
        proc.wait_healthy()
        w = f.world(conn)
        with requests.get(f"{proc.url}/api/sessions/{w.session_id}/events", stream=True, timeout=30) as resp:
            events = sse(resp)
            proc.proc.send_signal(signal.SIGTERM)
            last = next(events)
            assert list(events) == []  # and the response ended
        assert proc.proc.wait(30) == 0
        assert (last.event, last.id, last.json()["error"]) == ("error", None, "shutting_down")
        assert "Traceback" not in proc.output()
    finally:
        proc.stop()
