"""The ``hub_events`` channel (docs/operations.md), sent after the writes commit, in batches.

Postgres holds a database-wide lock through the WAL flush of every transaction that has queued a
NOTIFY, so NOTIFYing transactions cannot share a group commit (docs/performance.md). The dispatcher's
writes therefore do not NOTIFY: each writer calls ``emit`` once its write has committed, and one
thread per process sends whatever has queued in one statement from its own autocommit connection.

Events are hints (readers re-read the rows), so nothing here ever blocks a writer: the queue is
bounded and drops its oldest event when full, and a batch that cannot be sent within a bounded retry
is dropped with a warning. Both are counted (``dropped``, ``lost``).

The same thread sends the ``hub_feed`` wake-ups of feed events the writers appended with
``notify=False`` (core/feed.py; dispatcher/groupcommit.py): ``emit_feed``. Those are hints too: the
events themselves are durable rows, and the web process's streams also poll.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Sequence

import psycopg

from core import feed
from core.backoff import Backoff, Streak
from core.db import Conn, connect
from core.logging import get_logger
from core.sqlfiles import query
from core.vocabulary import HUB_EVENTS_CHANNEL, HubEvent, encode_event, message_event, status_event

log = get_logger("dispatcher.events")

CHANNEL = HUB_EVENTS_CHANNEL
# Between tries of one batch: 0.05 s doubling to 1 s, jittered (core/backoff.py), within retry_s.
SEND_BACKOFF = Backoff(base_s=0.05, max_s=1.0, jitter=0.5)
# Once woken, the sender waits this long before taking its batch, so the events of writes committing about
# the same moment go out in one statement: about one send per invocation at 10 busy slots without it, each
# a transaction in Postgres and two thread wake-ups here (docs/performance.md, session 6). A stream sees
# its wake-up at most this much later (the events themselves are durable rows or hints).
LINGER_S = 0.002


def send_now(conn: Conn, events: Sequence[HubEvent]) -> None:
    """NOTIFY ``events`` on ``conn`` in one statement (sql/queries/events/send.sql). Call it only after the
    writes they announce have committed, on a connection in autocommit (each NOTIFY waits for a commit)."""
    if events:
        _send_encoded(conn, [encode_event(e) for e in events])


def _send_encoded(conn: Conn, payloads: list[str]) -> None:
    conn.execute(query("events/send"), {"payloads": payloads})


def _send_batch(conn: Conn, batch: list[tuple[str, str]]) -> None:
    """(channel, payload) pairs in order, hub_events and hub_feed mixed, in one statement (an autocommit
    transaction): sql/queries/events/send_batch.sql."""
    conn.execute(query("events/send_batch"), {"channels": [c for c, _ in batch], "payloads": [p for _, p in batch]})


class EventNotifier:
    """Per-process batching sender of ``hub_events`` NOTIFYs, in emit order. A service (core/lifecycle.py)."""

    name = "hub-events"

    def __init__(
        self,
        database_url: str,
        *,
        max_queue: int = 10_000,
        batch: int = 500,
        retry_s: float = 5.0,
        linger_s: float = LINGER_S,
        application_name: str = "agent-hub-dispatcher-events",
    ) -> None:
        self.database_url = database_url
        self.max_queue = max_queue
        self.batch = batch
        self.retry_s = retry_s
        self.linger_s = linger_s
        self.application_name = application_name
        self.dropped = 0  # oldest events dropped because the queue was full
        self.lost = 0     # events dropped because they could not be sent within retry_s
        self.sent = 0
        self._queue: deque[tuple[str, str]] = deque()  # (channel, payload)
        self._inflight = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._conn: Conn | None = None
        self._thread = threading.Thread(target=self._run, name="hub-events", daemon=True)

    # -- writers' side ----------------------------------------------------------
    def emit(self, event: HubEvent) -> None:
        """Queue one event; call it only AFTER the write it announces has committed. Never blocks."""
        self._put([(CHANNEL, encode_event(event))])

    def emit_feed(self, payloads: Sequence[str]) -> None:
        """Queue hub_feed wake-ups (core/feed.py: wake_payloads) of feed rows that have committed. Never blocks."""
        self._put([(feed.CHANNEL, p) for p in payloads])

    def _put(self, items: list[tuple[str, str]]) -> None:
        with self._cond:
            for item in items:
                if len(self._queue) >= self.max_queue:
                    self._queue.popleft()
                    self.dropped += 1
                    if self.dropped == 1 or self.dropped % 1000 == 0:
                        log.warning("hub_events_queue_full", dropped_total=self.dropped)
                self._queue.append(item)
            self._cond.notify_all()

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> EventNotifier:
        self._thread.start()
        return self

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything emitted so far was sent (or given up on); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued, then close the connection; all within ``timeout``."""
        deadline = time.monotonic() + timeout
        if self._thread.is_alive():
            self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._close()

    # -- the sending thread -----------------------------------------------------
    def _take(self) -> list[tuple[str, str]]:
        """The next batch, oldest first. Postgres folds identical payloads within one transaction into one
        notification, so a repeated payload (e.g. PROCESSING again after a retry) ends the batch."""
        batch: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        while self._queue and len(batch) < self.batch and self._queue[0] not in seen:
            text = self._queue.popleft()
            seen.add(text)
            batch.append(text)
        return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return  # stopping, and everything was sent
                linger = self.linger_s if not self._stopping and len(self._queue) < self.batch else 0.0
            if linger > 0:
                time.sleep(linger)  # not a wait on the condition: each emit meanwhile would wake this thread
            with self._cond:
                batch = self._take()
                self._inflight = len(batch)
            try:
                self._send(batch)
            finally:
                with self._cond:
                    self._inflight = 0
                    self._cond.notify_all()

    def _send(self, batch: list[tuple[str, str]]) -> None:
        deadline = time.monotonic() + self.retry_s
        streak = Streak(SEND_BACKOFF)
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self.database_url, autocommit=True, application_name=self.application_name)
                _send_batch(self._conn, batch)
                self.sent += len(batch)
                return
            except psycopg.Error as exc:
                self._close()
                wait = streak.failed_before(deadline)
                if wait is None or self._stopping:
                    self.lost += len(batch)
                    log.warning("hub_events_dropped", events=len(batch), lost_total=self.lost, error=type(exc).__name__)
                    return
                log.info("hub_events_reconnecting", error=type(exc).__name__, retry_in_s=round(wait, 3))
                time.sleep(wait)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


__all__ = ["CHANNEL", "SEND_BACKOFF", "EventNotifier", "message_event", "send_now", "status_event"]
