"""Group commit: the run slots' writes share transactions (one round trip and one WAL flush per batch).

Each run slot used to write on its own pooled connection: a pool check, a round trip and a commit per
message, per log line and per finish, so a short run cost several WAL flushes and the dispatcher spent
its time waiting on them (docs/performance.md). Here every write goes to one of a few writer threads,
each with its own connection (one caller's writes always to the same one). While a writer commits a
batch, new writes queue up; it then sends everything queued, in order, as one pipelined transaction.
A caller blocks until its own statements have committed, so it sees the same contract as before: when
``submit`` returns, the write is durable and its RETURNING rows are there.

Faults:
- Postgres unreachable (``OperationalError``, which includes deadlocks and serialization failures):
  the connection is replaced and the whole batch is retried (tenacity) for up to ``retry_s``. Every
  statement sent here is safe to repeat (WriteBack's writes are idempotent or fenced by the lease).
- Any other error (a constraint, a timeout) rolls the batch back; each caller's statements are then
  run again on their own, so only the caller whose write is at fault gets the exception.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from core import feed, metrics
from core.db import CONNECTION_LOST, Conn, connect, retry_while_unreachable, set_statement_timeout
from core.logging import get_logger

log = get_logger("dispatcher.groupcommit")

Statement = tuple[str, dict[str, Any]]  # (SQL text, bound parameters)
Row = dict[str, Any] | None
# A write's feed events (core/feed.py), built from its statements' rows once they have run, in the same
# transaction: e.g. nothing when the lease fence refused the write.
FeedFor = Callable[[list[Row]], Sequence[feed.FeedEvent]]
Part = tuple[Sequence[Statement], FeedFor | None]  # one caller's statements and its feed events


class _Latch:
    """A one-shot signal on a bare lock (held until ``set``): cheaper than ``threading.Event``, whose
    Condition costs Python work on both sides for every write (docs/performance.md, session 4)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # already set
            self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        self._lock.release()  # stays set for any later wait
        return True


@dataclass
class _Request:
    """One caller's statements: executed in order, in the same transaction."""

    statements: Sequence[Statement]
    done: _Latch = field(default_factory=_Latch)
    rows: list[Row] = field(default_factory=list)
    error: BaseException | None = None
    awaited: bool = True
    feed: FeedFor | None = None


def execute_in_order(conn: Conn, statements: Sequence[Statement]) -> list[Row]:
    """On an autocommit connection: the statements in order, in one transaction and one round trip;
    returns each one's first row (None for a statement without rows)."""
    if len(statements) == 1:  # autocommit: no BEGIN/COMMIT round trips for a lone statement
        sql, params = statements[0]
        cur = conn.execute(sql, params)
        return [cur.fetchone() if cur.description else None]
    with conn.pipeline(), conn.transaction():
        cursors = [conn.execute(sql, params) for sql, params in statements]
    return [cur.fetchone() if cur.description else None for cur in cursors]


def execute_with_feed(conn: Conn, parts: Sequence[Part], *, notify: bool) -> tuple[list[Row], list[str]]:
    """``execute_in_order`` for several callers' statements, plus their feed events in the SAME transaction.

    The statements run first (pipelined, one round trip); then each caller's ``FeedFor`` turns its rows into
    events, and ONE feed insert (sql/queries/feed/insert.sql) appends them all, last, before the commit. One
    insert per transaction, and always last: its advisory locks (one per session, taken in key order) are the
    transaction's final locks, so it never waits on a row lock while holding a feed lock, and two batches
    cannot deadlock on the keys. ``notify``: the insert sends its NOTIFY hub_feed itself; else the returned
    wake payloads are to be sent after the commit (core/feed.py: wake)."""
    statements = [s for part, _ in parts for s in part]
    if not any(f is not None for _, f in parts):
        return execute_in_order(conn, statements), []
    # Two round trips: BEGIN and the statements, synced (their rows are needed to build the events); then
    # the feed insert and the COMMIT. The transaction stays open across the sync.
    with conn.pipeline() as pipeline, conn.transaction():
        cursors = [conn.execute(sql, params) for sql, params in statements]
        pipeline.sync()
        rows = [cur.fetchone() if cur.description else None for cur in cursors]
        events: list[feed.FeedEvent] = []
        at = 0
        for part, feed_for in parts:
            mine = rows[at:at + len(part)]
            at += len(part)
            if feed_for is not None:
                events.extend(feed_for(mine))
        ids = feed.queue_events(conn, events, notify=notify)
    return rows, ([] if notify or not events else feed.wake_payloads(events, ids()))


class Closed(RuntimeError):
    """submit() after stop(): the dispatcher is shutting down and its writer has gone."""


class Abandoned(RuntimeError):
    """submit(until=…) stopped waiting because ``until()`` turned true first (the caller's run was stopped).
    The write stays queued and may still commit: like every write sent here it is fenced or idempotent."""


ABANDON_POLL_S = 0.05  # how often a waiting caller's ``until`` is checked while its write has not committed


class GroupCommitter:
    """The shared writers. A service (core/lifecycle.py): ``start()``, ``stop(timeout)``."""

    name = "group-commit"

    def __init__(
        self,
        database_url: str,
        *,
        writers: int = 2,
        max_statements: int = 200,
        retry_s: float = 60.0,
        statement_timeout_ms: int = 30_000,
        on_retry: Callable[[int], None] | None = None,
        application_name: str = "agent-hub-dispatcher-writer",
        on_feed: Callable[[list[str]], None] | None = None,
        idle_in_transaction_ms: int = 0,
    ) -> None:
        self.database_url = database_url
        self.max_statements = max_statements
        self.retry_s = retry_s
        self.statement_timeout_ms = statement_timeout_ms
        # A writer paused mid-transaction (SIGSTOP, a frozen VM) would hold its rows' fence locks, which the
        # claim's SKIP LOCKED passes by: its rows could never be reclaimed. Postgres ends such a session.
        self.idle_in_transaction_ms = idle_in_transaction_ms
        self.on_retry = on_retry
        self.application_name = application_name
        # Where the hub_feed wake-ups of a committed batch go (the EventNotifier's emit_feed); None: the feed
        # insert NOTIFYs inside the transaction instead (which costs the batch its place in group commit).
        self.on_feed = on_feed
        self.batches = 0      # transactions committed (for the bench and tests: writes per commit)
        self.statements = 0
        self.failed_unawaited = 0  # submit(wait=False) writes that failed (logged; nobody was waiting)
        self._lock = threading.Lock()
        # One queue per writer thread, each with its own connection. A caller's writes all go to the
        # writer its key picks, so they commit in the order they were submitted, even unawaited ones.
        self._queues: list[deque[_Request]] = [deque() for _ in range(writers)]
        self._wakeups = [threading.Condition(self._lock) for _ in range(writers)]
        self._stopping = False
        self._local = threading.local()  # each writer thread's own connection
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"group-commit-{i}", daemon=True)
                         for i in range(writers)]

    # -- callers' side ----------------------------------------------------------
    def submit(
        self,
        statements: Sequence[Statement],
        *,
        key: int = 0,
        wait: bool = True,
        until: Callable[[], bool] | None = None,
        feed: FeedFor | None = None,
    ) -> list[Row]:
        """Run the statements in order in one transaction (shared with other callers'). With ``wait``, block
        until it has committed and return each statement's first row (None for a statement without rows).
        Without, return at once (an empty list); a failure is only logged. ``key`` (e.g. the outbox id) keeps
        one caller's writes in submission order: the same key always goes to the same writer. ``until``: stop
        waiting (``Abandoned``) once it returns true, e.g. when the caller's run was stopped while Postgres is
        away, so a stopped run is not held up for as long as the writer retries. ``feed``: the write's feed
        events, built from its rows and appended in the same transaction (``execute_with_feed``)."""
        if not statements:
            return []
        request = _Request(statements, awaited=wait, feed=feed)
        i = key % len(self._queues)
        with self._lock:
            if self._stopping or not self._threads[i].is_alive():
                raise Closed("the dispatcher's writer is not running")
            self._queues[i].append(request)
            self._wakeups[i].notify()
        if not wait:
            return []
        if until is None:
            request.done.wait()
        else:
            while not request.done.wait(ABANDON_POLL_S):
                if until():
                    raise Abandoned("stopped waiting for a write that has not committed yet")
        if request.error is not None:
            raise request.error
        return request.rows

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> GroupCommitter:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 65.0) -> None:
        """Commit what is queued, then close. Callers still blocked after ``timeout`` get ``Closed``."""
        with self._lock:
            self._stopping = True
            for wakeup in self._wakeups:
                wakeup.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = [r for q in self._queues for r in q]
            for q in self._queues:
                q.clear()
        for request in left:
            self._fail(request, Closed("the dispatcher's writer stopped before this write"))

    # -- the writer threads -----------------------------------------------------
    def _take(self, queue: deque[_Request]) -> list[_Request]:
        """Everything queued, up to max_statements (at least one request)."""
        taken: list[_Request] = []
        count = 0
        while queue and (not taken or count + len(queue[0].statements) <= self.max_statements):
            request = queue.popleft()
            taken.append(request)
            count += len(request.statements)
        return taken

    def _run(self, i: int) -> None:
        queue, wakeup = self._queues[i], self._wakeups[i]
        try:
            while True:
                with self._lock:
                    while not queue and not self._stopping:
                        wakeup.wait()
                    if not queue:
                        return  # stopping, and everything queued was committed
                    batch = self._take(queue)
                self._commit(batch)
        finally:
            self._close()

    def _commit(self, batch: list[_Request]) -> None:
        try:
            results, wakes = self._retrying([(r.statements, r.feed) for r in batch])
        except CONNECTION_LOST as exc:  # Postgres gone for longer than retry_s: every caller fails
            for request in batch:
                self._fail(request, exc)
            return
        except Exception as exc:
            if len(batch) == 1:  # the caller's own write is at fault: the error is theirs
                self._fail(batch[0], exc)
                return
            # One caller's statement failed and rolled everyone back: commit each caller alone.
            log.warning("group_commit_split", requests=len(batch), error=type(exc).__name__)
            for request in batch:
                self._commit([request])
            return
        at = 0
        for request in batch:
            request.rows = results[at:at + len(request.statements)]
            at += len(request.statements)
            request.done.set()
        if wakes and self.on_feed is not None:
            self.on_feed(wakes)

    def _fail(self, request: _Request, error: BaseException) -> None:
        request.error = error
        metrics.WRITE_FAILURES.labels(awaited="true" if request.awaited else "false").inc()
        if not request.awaited:  # nobody will see the exception: say it here
            self.failed_unawaited += 1
            log.warning("unawaited_write_failed", error=type(error).__name__, detail=str(error)[:200])
        request.done.set()

    def _retrying(self, parts: list[Part]) -> tuple[list[Row], list[str]]:
        try:  # the first try without tenacity's bookkeeping per commit (docs/performance.md, session 4)
            return self._execute(self._connection(), parts)
        except CONNECTION_LOST:
            self._close()  # a dead or aborted connection: the next try opens a fresh one
        for attempt in retry_while_unreachable(self.retry_s):
            if self.on_retry is not None:
                self.on_retry(attempt.retry_state.attempt_number + 1)  # tries 2, 3, …
            with attempt:
                try:
                    return self._execute(self._connection(), parts)
                except CONNECTION_LOST:
                    self._close()  # a dead or aborted connection: the next try opens a fresh one
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _execute(self, conn: Conn, parts: list[Part]) -> tuple[list[Row], list[str]]:
        rows, wakes = execute_with_feed(conn, parts, notify=self.on_feed is None)
        self.batches += 1
        self.statements += len(rows)
        metrics.WRITE_COMMITS.inc()
        metrics.WRITE_STATEMENTS.inc(len(rows))
        return rows, wakes

    def _connection(self) -> Conn:
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = connect(self.database_url, autocommit=True, application_name=self.application_name)
            set_statement_timeout(conn, self.statement_timeout_ms, idle_in_transaction_ms=self.idle_in_transaction_ms)
            self._local.conn = conn
        return conn

    def _close(self) -> None:
        conn, self._local.conn = getattr(self._local, "conn", None), None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
