"""Everything the dispatcher writes into the hub's tables, one method per kind of write.

Each write is one short transaction, retried (tenacity) while Postgres is
unreachable, so a database restart delays a write instead of losing it. In the
dispatcher that transaction is shared with other run slots' writes
(dispatcher/groupcommit.py). Writes are idempotent where a re-run could repeat
them (message ids derive from the job id and the message's sequence number).

Each write also appends the feed events it announces (core/feed.py: ``message``, ``delta``,
``progress``, ``log``, ``status``) in the SAME transaction, built from the write's own rows: a write the
lease fence refused, or one that changed nothing, appends none.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from psycopg.types.json import Jsonb

from core import feed, metrics
from core.db import Pool, run_with_retry
from core.logging import get_logger
from core.sqlfiles import query
from core.vocabulary import JOB_STATUS_FOR, HubEvent, OutboxStatus, message_event, status_event
from dispatcher.events import EventNotifier
from dispatcher.groupcommit import Abandoned, FeedFor, GroupCommitter, Row, Statement, execute_with_feed
from dispatcher.line_clock import LineClock

log = get_logger("dispatcher.writeback")

# Namespace for ChatMessage ids derived from (job id, sequence).
MESSAGE_NAMESPACE = uuid.UUID("6f1d3a52-8e0b-4c1e-9a57-0c5b1f7e2d41")

def count_retry(attempt: int) -> None:
    metrics.DB_WRITE_RETRIES.inc()
    log.warning("db_write_retry", attempt=attempt)


def message_id(job_id: str, seq: int) -> str:
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{job_id}:{seq}"))


class WriteBack:
    """Writes for one claimed outbox row (and its Job), each fenced by the run's lease: the row's owner and
    attempt (sql/queries/dispatcher/run_fence.sql). A write the fence refused changed nothing; the first one
    calls ``on_lost`` (the worker stops the run) and ``lost`` stays true."""

    def __init__(
        self,
        pool: Pool,
        *,
        outbox_id: int,
        job_id: str,
        session_id: str | None,
        owner: str,
        attempt: int,
        db_retry_s: float = 60.0,
        events: EventNotifier | None = None,
        committer: GroupCommitter | None = None,
        on_lost: Callable[[], None] | None = None,
        stopped: Callable[[], bool] | None = None,
    ) -> None:
        self.pool = pool
        self.outbox_id = outbox_id
        self.job_id = job_id
        self.session_id = session_id
        self.owner = owner
        self.attempt = attempt
        self.on_lost = on_lost
        self.stopped = stopped
        self.lost = False
        self.db_retry_s = db_retry_s
        self.events = events  # hub_events, emitted after each write commits (None: not announced)
        # The dispatcher's shared writer (dispatcher/groupcommit.py); None: each write on its own pooled connection.
        self.committer = committer
        self.line_clock = LineClock()  # JobLog times in the order written (dispatcher/line_clock.py)

    def _write(self, statements: list[Statement], *, wait: bool = True, mid_run: bool = False,
               feed_for: FeedFor | None = None) -> list[Row]:
        """Run the statements in order in one transaction; returns once they have committed. Every write
        here is safe to repeat (idempotent or fenced by the lease), as both paths may retry it.

        ``wait=False`` (log lines only): with the dispatcher's writer, return at once; the line still
        commits before any later write of this run (same writer, in order), and a failure is logged.
        ``mid_run``: raise ``Abandoned`` instead of waiting on once the run is stopped (dispatcher's writer).
        ``feed_for``: the write's feed events from its rows, appended in the same transaction."""
        if self.committer is not None:
            until = self.stopped if mid_run else None
            return self.committer.submit(statements, key=self.outbox_id, wait=wait, until=until, feed=feed_for)
        return run_with_retry(self.pool, lambda c: execute_with_feed(c, [(statements, feed_for)], notify=True)[0],
                              retry_s=self.db_retry_s, on_retry=count_retry)

    def _fenced(self, params: dict[str, Any]) -> dict[str, Any]:
        """The write's parameters with the run's fencing token."""
        return {**params, "outbox_id": self.outbox_id, "owner": self.owner, "attempt": self.attempt}

    def _held(self, row: Row) -> bool:
        """Whether the fence let the write through; the first refusal calls ``on_lost``."""
        if row is not None and row["held"]:
            return True
        self._lose()
        return False

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            log.warning("write_fenced", outbox_id=self.outbox_id, attempt=self.attempt)
            metrics.FENCED_WRITES.inc()
            if self.on_lost is not None:
                self.on_lost()

    def message(self, seq: int, content: str) -> bool:
        """Write the agent's seq-th message; False if it was already written by an earlier attempt."""
        if self.session_id is None:
            return False  # child invocations have no session: messages are returned to the caller
        params = {"id": message_id(self.job_id, seq), "content": content, "session_id": self.session_id, "job_id": self.job_id}

        def events(rows: list[Row]) -> list[feed.FeedEvent]:
            row = rows[0]
            if row is None or not row["held"] or row["id"] is None:
                return []
            return [feed.message(self.job_id, row["sessionId"], message_id=row["id"], role="agent", content=content,
                                 timestamp=row["timestamp"])]

        try:
            row = self._write([(query("dispatcher/insert_message"), self._fenced(params))], mid_run=True,
                              feed_for=events)[0]
        except Abandoned:
            self._abandoned("message")
            return False
        if not self._held(row) or row is None or row["id"] is None:
            return False
        self.announce(message_event(self.job_id, row["sessionId"], row["id"]))
        return True

    def user_var(self, key: str, value: str) -> bool:
        if self.session_id is None:
            return False
        params = {"id": str(uuid.uuid4()), "key": key, "value": value, "session_id": self.session_id}
        try:
            self._held(self._write([(query("dispatcher/upsert_user_var"), self._fenced(params))], mid_run=True)[0])
        except Abandoned:
            self._abandoned("user_var")
        return True

    def progress(self, percent: float, message: str | None) -> None:
        params = {"percent": float(percent), "message": message, "job_id": self.job_id}

        def events(rows: list[Row]) -> list[feed.FeedEvent]:
            row = rows[0]
            if row is None or not row["held"] or not row["updated"]:
                return []
            return [feed.progress(self.job_id, row["session_id"], progress=percent, status_message=row["status_message"])]

        try:
            self._held(self._write([(query("dispatcher/set_progress"), self._fenced(params))], mid_run=True,
                                   feed_for=events)[0])
        except Abandoned:
            self._abandoned("progress")

    def _abandoned(self, kind: str) -> None:
        metrics.WRITES_ABANDONED.inc()
        log.info("write_abandoned", outbox_id=self.outbox_id, attempt=self.attempt, kind=kind)

    def log(self, level: str, message: str) -> None:
        params = {"id": str(uuid.uuid4()), "level": level, "message": message, "job_id": self.job_id,
                  "at": self.line_clock.next()}
        line = feed.log(self.job_id, self.session_id, level=level, message=message)
        # Not awaited: a JobLog line gates nothing, and the run's next write commits after it anyway (and its
        # fence tells the run whether it still holds its row).
        rows = self._write([(query("dispatcher/job_log"), self._fenced(params))], wait=False,
                           feed_for=lambda rows: [line] if rows[0] is not None and rows[0]["held"] else [])
        if rows:  # answered at once (no shared writer): the fence's verdict is here already
            self._held(rows[0])

    def deltas(self, message_id: str, first_index: int, texts: Sequence[str]) -> None:
        """``delta`` feed events of the streaming message ``message_id`` (its chunks ``first_index``, +1, ...),
        fenced like every write of the run (dispatcher/fence_check.sql) and not awaited, like a log line: the
        run's next write (e.g. the message itself) commits after them."""
        if not texts or self.session_id is None:  # a child's messages go back to its caller, not to a session
            return
        chunks = [feed.delta(self.job_id, self.session_id, message_id=message_id, index=first_index + i, text=t)
                  for i, t in enumerate(texts)]
        rows = self._write([(query("dispatcher/fence_check"), self._fenced({}))], wait=False,
                           feed_for=lambda rows: chunks if rows[0] is not None and rows[0]["held"] else [])
        if rows:
            self._held(rows[0])

    def finish(
        self,
        status: OutboxStatus,
        *,
        error: str | None,
        result: dict[str, Any],
        status_message: str,
        logs: Sequence[tuple[str, str]] = (),
    ) -> bool:
        """Final row + Job state in one statement, with the run's last JobLog lines (level, message)
        written before it in the same statement. False if the lease was lost meanwhile."""
        params: dict[str, Any] = {
            "status": status.value,
            "job_status": JOB_STATUS_FOR[status].value,
            "result": Jsonb(result),
            "error": error,
            "status_message": status_message,
        }
        # The logs and the final state in one statement: one round trip and one commit (one WAL flush).
        params["job_id"] = self.job_id
        params["log_ids"] = [str(uuid.uuid4()) for _ in logs]
        params["log_levels"] = [level for level, _ in logs]
        params["log_messages"] = [message for _, message in logs]
        params["log_ats"] = [self.line_clock.next() for _ in logs]

        def events(rows: list[Row]) -> list[feed.FeedEvent]:
            row = rows[0]
            if row is None:  # fenced out: nothing was written
                return []
            out = [feed.log(self.job_id, self.session_id, level=level, message=message) for level, message in logs]
            if row["job_status"] is not None:  # last: the job stream ends after a terminal status
                out.append(feed.status(self.job_id, row["session_id"], status=row["job_status"], error_message=error))
            return out

        return self._announced(self._write([(query("dispatcher/finish"), self._fenced(params))], feed_for=events)[0])

    def retry_later(self, *, delay_s: float, error: str, status_message: str) -> bool:
        params = {
            "delay_s": delay_s,
            "error": error,
            "status_message": status_message,
        }
        return self._announced(self._write([(query("dispatcher/retry_later"), self._fenced(params))],
                                           feed_for=self._status_events)[0])

    def _status_events(self, rows: list[Row]) -> list[feed.FeedEvent]:
        """The Job's new status, when the statement moved it (a row with ``job_status``)."""
        row = rows[0]
        if row is None or row["job_status"] is None:
            return []
        return [feed.status(self.job_id, row["session_id"], status=row["job_status"])]

    def announce(self, event: HubEvent) -> None:
        """Queue a hub_events event; only after the write it announces has committed."""
        if self.events is not None:
            self.events.emit(event)

    def _announced(self, row: dict[str, Any] | None) -> bool:
        """For finish/retry_later: announce the Job's new status if the statement changed it (no row: the
        fence refused the write)."""
        if row is None:
            self._lose()
            return False
        if row["job_status"] is not None:
            self.announce(status_event(self.job_id, row["session_id"], row["job_status"]))
        return True
