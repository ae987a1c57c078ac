"""Group commit: the run slots' writes share transactions (one round trip and one WAL flush per batch).

Each run slot used to write on its own pooled connection: a pool check, a round trip and a commit per
message, per log line and per finish, so a short run cost several WAL flushes and the dispatcher spent
its time waiting on them (docs/performance.md). Here every write goes to one thread that owns one
connection. While it commits a batch, new writes queue up; it then sends everything queued, in order,
as one pipelined transaction. A caller blocks until its own statements have committed, so it sees the
same contract as before: when ``submit`` returns, the write is durable and its RETURNING rows are there.

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
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from core.db import connect
from core.logging import get_logger

log = get_logger("dispatcher.groupcommit")

Statement = tuple[str, dict[str, Any]]  # (SQL text, bound parameters)
Row = dict[str, Any] | None


@dataclass
class _Request:
    """One caller's statements: executed in order, in the same transaction."""

    statements: Sequence[Statement]
    done: threading.Event = field(default_factory=threading.Event)
    rows: list[Row] = field(default_factory=list)
    error: BaseException | None = None


def execute_in_order(conn: psycopg.Connection, statements: Sequence[Statement]) -> list[Row]:
    """On an autocommit connection: the statements in order, in one transaction and one round trip;
    returns each one's first row (None for a statement without rows)."""
    if len(statements) == 1:  # autocommit: no BEGIN/COMMIT round trips for a lone statement
        sql, params = statements[0]
        cur = conn.execute(sql, params)
        return [cur.fetchone() if cur.description else None]
    with conn.pipeline(), conn.transaction():
        cursors = [conn.execute(sql, params) for sql, params in statements]
    return [cur.fetchone() if cur.description else None for cur in cursors]


class Closed(RuntimeError):
    """submit() after stop(): the dispatcher is shutting down and its writer has gone."""


class GroupCommitter:
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
    ) -> None:
        self.database_url = database_url
        self.max_statements = max_statements
        self.retry_s = retry_s
        self.statement_timeout_ms = statement_timeout_ms
        self.on_retry = on_retry
        self.application_name = application_name
        self.batches = 0      # transactions committed (for the bench and tests: writes per commit)
        self.statements = 0
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._local = threading.local()  # each writer thread's own connection
        self._threads = [threading.Thread(target=self._run, name=f"group-commit-{i}", daemon=True) for i in range(writers)]

    # -- callers' side ----------------------------------------------------------
    def submit(self, statements: Sequence[Statement]) -> list[Row]:
        """Run the statements in order in one transaction (shared with other callers'); block until it
        has committed; return each statement's first row (None for a statement without rows)."""
        if not statements:
            return []
        request = _Request(statements)
        with self._cond:
            if self._stopping or not any(t.is_alive() for t in self._threads):
                raise Closed("the dispatcher's writer is not running")
            self._queue.append(request)
            self._cond.notify()
        request.done.wait()
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
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left, self._queue = list(self._queue), deque()
        for request in left:
            request.error = Closed("the dispatcher's writer stopped before this write")
            request.done.set()

    # -- the writer thread ------------------------------------------------------
    def _take(self) -> list[_Request]:
        """Everything queued, up to max_statements (at least one request)."""
        taken: list[_Request] = []
        count = 0
        while self._queue and (not taken or count + len(self._queue[0].statements) <= self.max_statements):
            request = self._queue.popleft()
            taken.append(request)
            count += len(request.statements)
        return taken

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._stopping:
                        self._cond.wait()
                    if not self._queue:
                        return  # stopping, and everything queued was committed
                    batch = self._take()
                self._commit(batch)
        finally:
            self._close()

    def _commit(self, batch: list[_Request]) -> None:
        try:
            results = self._retrying([s for r in batch for s in r.statements])
        except psycopg.OperationalError as exc:  # Postgres gone for longer than retry_s: every caller fails
            for request in batch:
                request.error = exc
                request.done.set()
            return
        except Exception as exc:
            if len(batch) == 1:  # the caller's own write is at fault: the error is theirs
                batch[0].error = exc
                batch[0].done.set()
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

    def _retrying(self, statements: list[Statement]) -> list[Row]:
        for attempt in Retrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(self.retry_s),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1 and self.on_retry is not None:
                    self.on_retry(attempt.retry_state.attempt_number)
                try:
                    return self._execute(self._connection(), statements)
                except psycopg.OperationalError:
                    self._close()  # a dead or aborted connection: the next try opens a fresh one
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _execute(self, conn: psycopg.Connection, statements: list[Statement]) -> list[Row]:
        rows = execute_in_order(conn, statements)
        self.batches += 1
        self.statements += len(statements)
        return rows

    def _connection(self) -> psycopg.Connection:
        conn: psycopg.Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = connect(self.database_url, autocommit=True, application_name=self.application_name)
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{self.statement_timeout_ms}ms",))
            self._local.conn = conn
        return conn

    def _close(self) -> None:
        conn, self._local.conn = getattr(self._local, "conn", None), None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
