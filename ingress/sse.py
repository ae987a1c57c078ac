"""The SSE streams: ``GET /api/jobs/<jobId>/events`` and ``GET /api/sessions/<sessionId>/events``.

Native ASGI on the web process's event loop (ingress/asgi.py): an open stream is a coroutine and a
few small objects, not a thread. Each stream reads the feed (agent_hub.feed_event) itself, after the
last id it sent, a page at a time and at its client's pace: it replays from ``Last-Event-ID`` (or
``?after=``), then waits for the process's LISTEN connection (ingress/feedhub.py) to wake it. So what
a stream holds is bounded by one page (SSE_PAGE_EVENTS, SSE_PAGE_CHARS) plus the server's write
buffer, however slow its client; and since ids follow commit order within a session (feed/insert.sql),
resuming after an id misses nothing and repeats nothing.

Endings, each a last event a client can act on (then the response ends):
- a job stream ends after the job's terminal ``status`` event (at once when it is already the job's
  last event); a job the hub's table shows finished but whose feed has no terminal status (cancelled by
  Next.js before it ran, or run before the feed existed) ends with a ``status`` built from the Job row,
  without an ``id:`` (nothing durable to resume from);
- ``event: error`` ``{"error": "slow_client", ...}``: the client read nothing for SSE_SLOW_CLIENT_S while
  output waited for it; it is queued behind what was sent, and the client resumes with its Last-Event-ID;
- ``event: error`` ``{"error": "database_unavailable", ...}``: the database was lost; resume later;
- ``event: error`` ``{"error": "shutting_down", ...}``: the process got SIGTERM (a deploy); resume at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import psycopg
from psycopg_pool import PoolTimeout

from core.config import StreamConfig
from core.feed import TERMINAL_STATUSES
from core.logging import get_logger
from core.sqlfiles import query
from ingress.errors import ApiError
from ingress.feedhub import AsyncPool, FeedHub
from ingress.validation import Limits

log = get_logger("ingress.sse")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

RETRY_MS = 2000  # the `retry:` a browser's EventSource waits before reconnecting
MAX_EVENT_ID = 2**63 - 1
FINAL_WRITE_S = 1.0  # how long a last event may wait on a client that reads nothing


_FAILURES = {
    "database_unavailable": "the database is unreachable; resume from lastEventId",
    "shutting_down": "this server is stopping (a deploy or restart); resume from lastEventId",
}


@dataclass(frozen=True)
class StreamTarget:
    kind: str  # "job" | "session"
    ident: str
    after: int


def sse_event(event_id: int | None, kind: str, data: str) -> bytes:
    """One event in the text/event-stream format; a data line per line of ``data`` (JSON has none)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"{head}event: {kind}\n{lines}\n".encode()


def _error_data(code: str, message: str, last_id: int) -> str:
    return json.dumps({"error": code, "message": message, "lastEventId": last_id})


def parse_after(last_event_id: str | None, after: str | None) -> int:
    """Where a stream starts: after the ``Last-Event-ID`` header's id (a reconnect), else ``?after=``, else 0."""
    for field, raw in (("Last-Event-ID", last_event_id), ("after", after)):
        if raw is None:
            continue
        text = raw.strip()
        if not text.isdigit() or not text.isascii() or int(text) > MAX_EVENT_ID:
            raise ApiError(400, "invalid_field", f"{field} must be an event id (a whole number >= 0)", field=field)
        return int(text)
    return 0


def target_of(kind: str, ident: str, scope: Scope, limits: Limits) -> StreamTarget:
    """The stream asked for: the id checked as the invoke endpoint checks ids, and where to start."""
    field = "jobId" if kind == "job" else "sessionId"
    if ident == "" or ident.strip() != ident:
        raise ApiError(400, "invalid_field", f"{field} must be a non-empty id without surrounding spaces", field=field)
    if len(ident) > limits.max_id_chars:
        raise ApiError(400, "invalid_field", f"{field} must be at most {limits.max_id_chars} characters", field=field)
    if "\x00" in ident:
        raise ApiError(400, "invalid_field", f"{field} must not contain NUL characters", field=field)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    params = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return StreamTarget(kind, ident, parse_after(headers.get("last-event-id"), (params.get("after") or [None])[-1]))


class Stream:
    """One open SSE response: woken by the hub, reads the feed after ``last_id``, writes to its client."""

    def __init__(self, target: StreamTarget, pool: AsyncPool, hub: FeedHub, cfg: StreamConfig, send: Send) -> None:
        self.target = target
        self.pool = pool
        self.hub = hub
        self.cfg = cfg
        self.send = send
        self.last_id = target.after
        self.sent = 0
        self._signal = asyncio.Event()
        self._woken = True  # look at the feed first thing
        self._failure: str | None = None
        self._gone = False
        self.outcome = "open"

    # -- the hub's side -----------------------------------------------------------
    def wake(self) -> None:
        self._woken = True
        self._signal.set()

    def fail(self, reason: str) -> None:
        self._failure = reason
        self._signal.set()

    def client_gone(self) -> None:
        self._gone = True
        self._signal.set()

    # -- the stream -----------------------------------------------------------------
    async def _fetch(self) -> list[dict[str, Any]]:
        name, key = ("feed/job_after", "job_id") if self.target.kind == "job" else ("feed/session_after", "session_id")
        async with self.pool.connection() as conn:
            cur = await conn.execute(query(name), {key: self.target.ident, "after": self.last_id,
                                                   "limit": self.cfg.page_events, "max_chars": self.cfg.page_chars})
            return await cur.fetchall()

    async def _job_state(self) -> dict[str, Any] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(query("feed/job"), {"job_id": self.target.ident})
            return await cur.fetchone()

    async def _write(self, data: bytes, *, timeout: float | None = None) -> None:
        """Hand ``data`` to the server; TimeoutError when the client leaves it unread for ``timeout``."""
        async with asyncio.timeout(self.cfg.slow_client_s if timeout is None else timeout):
            await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def _pump(self) -> bool:
        """Send every event after ``last_id``, a page at a time; True when a terminal status was among them."""
        terminal = False
        while True:
            rows = await self._fetch()
            chars = 0
            for row in rows:
                # Counted as sent once handed over: a write that times out on a slow client has already put the
                # event in the connection's buffer (only waiting for it to drain was cut short).
                self.last_id = row["id"]
                await self._write(sse_event(row["id"], row["kind"], row["data"]))
                self.sent += 1
                chars += len(row["data"])
                terminal = terminal or bool(row["terminal"])
            if len(rows) < self.cfg.page_events and chars < self.cfg.page_chars:
                return terminal  # caught up

    async def _job_over(self) -> tuple[bool, dict[str, Any] | None]:
        """Whether the job stream is done once caught up: (True, None) when the feed's latest event of the job
        is its terminal status and was sent (or asked to be skipped); (True, Job row) when the hub's table says
        the job is over but the feed will never say so; (False, None) otherwise."""
        state = await self._job_state()
        if state is None or (state["last_id"] is not None and state["last_id"] > self.last_id):
            return False, None  # events still to send first
        if state["last_terminal"]:
            return True, None
        if state["job_status"] in TERMINAL_STATUSES:
            return True, state
        return False, None

    async def run(self) -> None:
        """The open response's body, until an ending (module docstring) or the client leaves."""
        await self._write(f"retry: {RETRY_MS}\n\n".encode())
        check_job = self.target.kind == "job"  # look at the Job row once caught up, then on each keep-alive
        while True:
            if self._gone:
                self.outcome = "client_left"
                return
            if self._failure is not None:
                await self._end_with_error(self._failure, _FAILURES.get(self._failure, "resume from lastEventId"))
                return
            if self._woken:
                self._woken = False
                self._signal.clear()
                if await self._pump():
                    check_job = True  # is that terminal status still the job's latest event?
            if check_job:
                check_job = False
                over, state = await self._job_over()
                if over:
                    if state is not None:
                        data = json.dumps({"jobId": self.target.ident, "status": state["job_status"],
                                           "errorMessage": state["error_message"]})
                        await self._write(sse_event(None, "status", data))
                    self.outcome = "job_finished"
                    await self._finish()
                    return
            if self._woken or self._gone or self._failure is not None:
                continue
            try:
                async with asyncio.timeout(self.cfg.keepalive_s):
                    await self._signal.wait()
            except TimeoutError:
                await self._write(b": keep-alive\n\n")
                # A lost notification costs at most one keep-alive period.
                self._woken = True
                check_job = self.target.kind == "job"

    async def _end_with_error(self, code: str, message: str) -> None:
        self.outcome = code
        with contextlib.suppress(Exception):
            await self._write(sse_event(None, "error", _error_data(code, message, self.last_id)), timeout=FINAL_WRITE_S)
        await self._finish()

    async def _finish(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(FINAL_WRITE_S):
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def serve(self) -> None:
        """``run`` with its failures turned into endings."""
        try:
            await self.run()
        except TimeoutError:
            await self._end_with_error("slow_client", f"the client read nothing for {self.cfg.slow_client_s:g} s; "
                                       "resume from lastEventId")
        except (psycopg.OperationalError, PoolTimeout):
            await self._end_with_error("database_unavailable", "the database is unreachable; resume from lastEventId")
        except OSError:  # the server says the client is gone
            self.outcome = "client_left"


async def open_stream(
    target: StreamTarget, pool: AsyncPool, hub: FeedHub, cfg: StreamConfig, send: Send, receive: Receive,
    headers: list[tuple[bytes, bytes]],
) -> Stream:
    """Check the job or session exists (ApiError 404 otherwise; a database fault propagates), start the
    response, and serve the stream until it ends or the client leaves."""
    async with pool.connection() as conn:
        if target.kind == "job":
            cur = await conn.execute(query("feed/job"), {"job_id": target.ident})
        else:
            cur = await conn.execute(query("feed/session"), {"session_id": target.ident})
        row = await cur.fetchone()
    if row is None or not row["known"]:
        code = "job_not_found" if target.kind == "job" else "session_not_found"
        field = "jobId" if target.kind == "job" else "sessionId"
        raise ApiError(404, code, f"no {target.kind} with id {target.ident!r}", field=field)

    stream = Stream(target, pool, hub, cfg, send)
    key = (target.kind, target.ident)
    hub.watch(key, stream)  # before the first read: nothing committed after it can be missed

    async def watch_client() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                stream.client_gone()
                return

    watcher = asyncio.get_running_loop().create_task(watch_client())
    started = time.perf_counter()
    try:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache, no-transform"),
            (b"x-accel-buffering", b"no"),  # nginx and similar: do not buffer the stream
            *headers,
        ]})
        await stream.serve()
    finally:
        hub.unwatch(key, stream)
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
        log.info("stream_closed", kind=target.kind, id=target.ident, after=target.after, last_id=stream.last_id,
                 events=stream.sent, outcome=stream.outcome, s=round(time.perf_counter() - started, 3))
    return stream
