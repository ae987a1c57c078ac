"""One LISTEN hub_feed connection per web process, fanned out to the process's open SSE streams.

The feed's NOTIFY (sql/queries/feed/insert.sql) names the session and job whose events were appended
and the highest id. The hub only wakes the streams that watch that session or job; each stream then
reads its own new rows from the feed (ingress/sse.py), so a notification is a hint, never data: a lost
one costs a delay (streams also look on every keep-alive), never an event. When the connection is lost
(a database outage), every open stream is ended with an event saying so, and the hub reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Protocol, TypeAlias

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from core.db import SESSION_OPTIONS
from core.feed import CHANNEL
from core.logging import get_logger

log = get_logger("ingress.feed")

AsyncConn: TypeAlias = psycopg.AsyncConnection[DictRow]
AsyncPool: TypeAlias = AsyncConnectionPool[AsyncConn]


class Watcher(Protocol):
    """What the hub needs of a stream."""

    def wake(self) -> None:
        """New events may be in the feed for it."""

    def fail(self, reason: str) -> None:
        """The feed is unreachable: end the stream, saying ``reason``."""


def make_async_pool(url: str, *, max_size: int, timeout_s: float, statement_timeout_ms: int) -> AsyncPool:
    """The streams' own small pool (their queries are short; the invoke endpoint keeps its own pool)."""

    async def configure(conn: AsyncConn) -> None:
        await conn.set_autocommit(True)
        await conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{statement_timeout_ms}ms",))

    return AsyncConnectionPool(
        url, connection_class=AsyncConn, min_size=0, max_size=max_size, timeout=timeout_s, open=False,
        configure=configure, check=AsyncConnectionPool.check_connection,
        kwargs={"row_factory": dict_row, "application_name": "agent-hub-streams",
                "connect_timeout": max(1, int(timeout_s)), "options": SESSION_OPTIONS},
        name="agent-hub-streams",
    )


class FeedHub:
    """The process's LISTEN connection and the streams it wakes, keyed by ("job" | "session", id)."""

    def __init__(self, database_url: str, *, ping_s: float = 15.0, retry_max_s: float = 5.0) -> None:
        self.database_url = database_url
        self.ping_s = ping_s
        self.retry_max_s = retry_max_s
        self.listening = asyncio.Event()  # set while LISTEN is in force
        self.notifications = 0
        self.outages = 0
        self._watchers: dict[tuple[str, str], set[Watcher]] = {}
        self._task: asyncio.Task[None] | None = None

    # -- streams' side ----------------------------------------------------------
    def watch(self, key: tuple[str, str], watcher: Watcher) -> None:
        self._watchers.setdefault(key, set()).add(watcher)

    def unwatch(self, key: tuple[str, str], watcher: Watcher) -> None:
        watchers = self._watchers.get(key)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[key]

    @property
    def streams(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    def _all(self) -> Iterator[Watcher]:
        for watchers in list(self._watchers.values()):
            yield from list(watchers)

    def end_all(self, reason: str) -> int:
        """End every open stream with ``reason`` (a shutdown); how many there were."""
        watchers = list(self._all())
        for watcher in watchers:
            watcher.fail(reason)
        return len(watchers)

    def _wake(self, payload: str) -> None:
        try:
            note = json.loads(payload)
            keys = [("job", str(note["jobId"]))]
            if note.get("sessionId") is not None:
                keys.append(("session", str(note["sessionId"])))
        except (ValueError, TypeError, KeyError):
            log.warning("feed_notification_unreadable", payload=payload[:200])
            return
        for key in keys:
            for watcher in list(self._watchers.get(key, ())):
                watcher.wake()

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="feed-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.database_url, autocommit=True, row_factory=dict_row, connect_timeout=5,
                    application_name="agent-hub-streams-listen", options=SESSION_OPTIONS,
                )
            except psycopg.Error as exc:
                log.info("feed_listen_unreachable", error=type(exc).__name__, retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            try:
                await conn.execute(f"LISTEN {CHANNEL}")
                self.listening.set()
                backoff = 0.1
                # Events appended while no LISTEN was in force woke nobody: every stream looks now.
                for watcher in self._all():
                    watcher.wake()
                while True:
                    async for note in conn.notifies(timeout=self.ping_s):
                        self.notifications += 1
                        self._wake(note.payload)
                    await conn.execute("SELECT 1")  # an idle connection that died says so here
            except psycopg.Error as exc:
                self.listening.clear()
                self.outages += 1
                log.warning("feed_listen_lost", error=type(exc).__name__, streams_ended=self.streams)
                for watcher in self._all():
                    watcher.fail("database_unavailable")
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await conn.close()
