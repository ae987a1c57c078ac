"""The durable event feed of runs (agent_hub.feed_event, migration 0008): what the SSE streams serve.

Every event of a run (a ``message`` written, a ``delta`` of a streaming message, ``progress``, a
``status`` change, a ``log`` line) is one row with a durable, increasing id: the SSE ``id:`` a client
resumes from. Writers build events with the functions below and append them with ``insert_events``
in the SAME transaction as the change each one announces, so a client never sees an event for a
change that did not commit, nor misses one that did:

    with conn.transaction():
        conn.execute(query("dispatcher/insert_message"), ...)
        feed.insert_events(conn, [feed.message(job_id, session_id, message_id=..., role="agent",
                                               content=text, timestamp=ts)])

``payload`` is exactly the SSE ``data:`` object of the issue's stream (``jobId`` always), so the web
process serves rows without knowing the kinds. ``log`` messages must already be masked (the same text
as the JobLog row): the feed stores and serves what it is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from core.db import Conn
from core.sqlfiles import query

CHANNEL = "hub_feed"
# Statuses after which a job stream ends (the hub's JobStatus values).
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
JOB_STATUSES = frozenset({"QUEUED", "PROCESSING"}) | TERMINAL_STATUSES


class EventKind(StrEnum):
    """The SSE ``event:`` names; the feed's ``kind`` column."""

    MESSAGE = "message"
    DELTA = "delta"
    PROGRESS = "progress"
    STATUS = "status"
    LOG = "log"


@dataclass(frozen=True)
class FeedEvent:
    """One event to append: the job and session it belongs to, its kind, and its SSE data object."""

    job_id: str
    session_id: str | None
    kind: EventKind
    payload: dict[str, Any]

    def data(self) -> str:
        """The SSE data as stored (compact JSON, one line)."""
        return json.dumps(self.payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def timestamp_text(at: datetime) -> str:
    """An instant as the hub's JSON shows Prisma DateTimes: UTC, milliseconds, ``Z`` (naive = UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.astimezone(UTC).microsecond // 1000:03d}Z"


def message(job_id: str, session_id: str | None, *, message_id: str, role: str, content: str,
            timestamp: datetime) -> FeedEvent:
    """A ``ChatMessage`` was written (the whole text, also at the end of a streamed one)."""
    return FeedEvent(job_id, session_id, EventKind.MESSAGE, {
        "jobId": job_id, "messageId": message_id, "role": role, "content": content,
        "timestamp": timestamp_text(timestamp),
    })


def delta(job_id: str, session_id: str | None, *, message_id: str, index: int, text: str) -> FeedEvent:
    """Chunk number ``index`` (0, 1, ...) of the streaming message ``message_id`` (its later ``message``
    event carries the whole text). Consecutive chunks may be joined into one delta per flush."""
    if index < 0:
        raise ValueError("a delta's index is >= 0")
    return FeedEvent(job_id, session_id, EventKind.DELTA,
                     {"jobId": job_id, "messageId": message_id, "index": index, "text": text})


def progress(job_id: str, session_id: str | None, *, progress: float, status_message: str | None = None) -> FeedEvent:
    """``hub.set_progress``: the Job's progress (0-100) and status message."""
    value: float = int(progress) if float(progress).is_integer() else float(progress)
    return FeedEvent(job_id, session_id, EventKind.PROGRESS,
                     {"jobId": job_id, "progress": value, "statusMessage": status_message})


def status(job_id: str, session_id: str | None, *, status: str, error_message: str | None = None) -> FeedEvent:
    """The Job's status changed (the hub's JobStatus: QUEUED, PROCESSING, SUCCEEDED, FAILED, CANCELLED).
    A terminal status must be the job's last event of its run: the job stream ends after it."""
    if status not in JOB_STATUSES:
        raise ValueError(f"not a Job status: {status!r}")
    return FeedEvent(job_id, session_id, EventKind.STATUS,
                     {"jobId": job_id, "status": status, "errorMessage": error_message})


def log(job_id: str, session_id: str | None, *, level: str, message: str) -> FeedEvent:
    """A JobLog line (``hub.log`` or the service's own), its message already masked like the JobLog row."""
    return FeedEvent(job_id, session_id, EventKind.LOG, {"jobId": job_id, "level": level, "message": message})


def insert_events(conn: Conn, events: Sequence[FeedEvent], *, notify: bool = True) -> list[int]:
    """Append ``events`` in order in ``conn``'s current transaction (sql/queries/feed/insert.sql) and
    return their ids. ``notify``: the NOTIFY hub_feed that wakes the streams goes with the commit; with
    False, send ``wake_payloads(events, ids)`` after the commit instead (dispatcher/events.py: ``emit_feed``) (a NOTIFY in
    the transaction costs it its place in group commit: dispatcher/events.py). One call per transaction
    (or the same sessions in each call): the call locks its sessions until commit."""
    return queue_events(conn, events, notify=notify)()


def queue_events(conn: Conn, events: Sequence[FeedEvent], *, notify: bool = True) -> Callable[[], list[int]]:
    """``insert_events`` for a connection in pipeline mode: sends the insert without waiting for it and
    returns a function that reads the ids once its result is in (after the pipeline's next sync, e.g. at its
    end). The insert and the COMMIT after it then share one round trip (dispatcher/groupcommit.py)."""
    if not events:
        return list
    cur = conn.execute(query("feed/insert"), {
        "job_ids": [e.job_id for e in events],
        "session_ids": [e.session_id for e in events],
        "kinds": [str(e.kind) for e in events],
        "payloads": [e.data() for e in events],
        "notify": notify,
    })

    def ids() -> list[int]:
        row = cur.fetchone()
        assert row is not None
        return [int(i) for i in row["ids"]]

    return ids


def wake_payloads(events: Sequence[FeedEvent], ids: Sequence[int]) -> list[str]:
    """The hub_feed payloads feed/insert.sql would have sent for ``events`` stored with ``ids``: one per
    (session, job) with its highest id, to send after a commit made with ``notify=False``."""
    top: dict[tuple[str | None, str], int] = {}
    for event, event_id in zip(events, ids, strict=True):
        key = (event.session_id, event.job_id)
        top[key] = max(top.get(key, event_id), event_id)
    return [wake_payload(s, j, i) for (s, j), i in top.items()]


def wake_payload(session_id: str | None, job_id: str, event_id: int) -> str:
    """One hub_feed wake-up: the (session, job) whose events reach up to ``event_id``."""
    return json.dumps({"sessionId": session_id, "jobId": job_id, "id": event_id})
