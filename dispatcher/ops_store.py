"""The operator commands' reads and writes of the outbox (SQL in sql/queries/ops/); dispatcher/ops.py is the CLI.

Writes run inside the caller's transaction and return the ``hub_events`` they owe, which the caller
sends once that transaction has committed (``dispatcher.events.send_now``), as the dispatcher does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core import feed
from core.db import Conn
from core.sqlfiles import query
from core.vocabulary import HubEvent, OutboxStatus, status_event

Row = dict[str, Any]


@dataclass(frozen=True)
class Filters:
    """Rows selected by ``--status``, ``--agent``, ``--since`` and ``--older-than`` (seconds)."""

    status: str | None = None
    agent_id: str | None = None
    since_s: float | None = None
    older_s: float | None = None

    def params(self) -> dict[str, Any]:
        return {"status": self.status, "agent_id": self.agent_id, "since_s": self.since_s, "older_s": self.older_s}


@dataclass(frozen=True)
class Locked:
    """A row locked for a replay or cancel, with its Job's status (None: the Job was deleted)."""

    id: int
    job_id: str
    status: OutboxStatus
    job_exists: bool
    job_status: str | None


def _split_refs(refs: Sequence[str]) -> tuple[list[int], list[str]]:
    """Digits are outbox ids; anything else is a jobId (Prisma ids are uuids/cuids, never all digits)."""
    ids = [int(r) for r in refs if r.strip().isdigit()]
    job_ids = [r.strip() for r in refs if not r.strip().isdigit()]
    return ids, job_ids


def find(conn: Conn, refs: Sequence[str]) -> dict[str, Row]:
    """The rows named by outbox id or jobId, by the ref that named them (unknown refs are left out)."""
    ids, job_ids = _split_refs(refs)
    rows = conn.execute(query("ops/find"), {"ids": ids, "job_ids": job_ids}).fetchall()
    by_ref: dict[str, Row] = {}
    for r in rows:
        by_ref.setdefault(str(r["id"]), r)
        by_ref.setdefault(r["job_id"], r)
    return {ref: by_ref[ref.strip()] for ref in refs if ref.strip() in by_ref}


def counts(conn: Conn, filters: Filters) -> list[Row]:
    return conn.execute(query("ops/list_counts"), filters.params()).fetchall()


def rows(conn: Conn, filters: Filters, limit: int) -> list[Row]:
    return conn.execute(query("ops/list_rows"), {**filters.params(), "limit": max(0, limit)}).fetchall()


def job(conn: Conn, job_id: str) -> Row | None:
    return conn.execute(query("ops/show_job"), {"job_id": job_id}).fetchone()


def job_logs(conn: Conn, job_id: str, limit: int) -> list[Row]:
    return conn.execute(query("ops/show_logs"), {"job_id": job_id, "limit": max(0, limit)}).fetchall()


def history(conn: Conn, row_id: int) -> list[Row]:
    return conn.execute(query("ops/show_events"), {"id": row_id}).fetchall()


def select_for_replay(conn: Conn, filters: Filters) -> list[int]:
    return [r["id"] for r in conn.execute(query("ops/select_for_replay"), filters.params()).fetchall()]


def lock(conn: Conn, ids: Sequence[int]) -> list[Locked]:
    """Lock the rows (the claim skips them until the transaction ends), in id order."""
    found = conn.execute(query("ops/lock_rows"), {"ids": list(ids)}).fetchall()
    return [Locked(r["id"], r["job_id"], OutboxStatus(r["status"]), r["job_exists"], r["job_status"]) for r in found]


def set_actor(conn: Conn, actor: str, reason: str) -> None:
    """Who and why, for the journal trigger; local to the current transaction."""
    conn.execute(query("ops/set_actor"), {"actor": actor, "reason": reason})


def _announced(changed: list[Row]) -> list[HubEvent]:
    """The hub_events for the Jobs a write moved (job_status NULL: that Job did not move)."""
    return [status_event(r["job_id"], r["session_id"], r["job_status"]) for r in changed if r["job_status"] is not None]


def feed_statuses(conn: Conn, announced: Sequence[HubEvent]) -> None:
    """The ``status`` feed events of the Jobs a write moved (its hub_events), in the caller's transaction: call
    it once, after the transaction's last write (core/feed.py: one feed insert per transaction, last). The
    insert's NOTIFY hub_feed goes with the commit."""
    events = [feed.status(e["job_id"], e["session_id"], status=e["status"]) for e in announced if e["kind"] == "status"]
    feed.insert_events(conn, events)


def replay(conn: Conn, ids: Sequence[int]) -> tuple[list[int], list[HubEvent]]:
    """Finished rows back to pending, their Jobs back to QUEUED: the ids replayed and the events owed."""
    changed = conn.execute(query("ops/replay"), {"ids": list(ids)}).fetchall()
    return [r["id"] for r in changed], _announced(changed)


def cancel_pending(conn: Conn, ids: Sequence[int], actor: str) -> list[HubEvent]:
    changed = conn.execute(query("ops/cancel_pending"), {"ids": list(ids), "actor": actor}).fetchall()
    return _announced(changed)


def cancel_running(conn: Conn, ids: Sequence[int], actor: str, reason: str) -> list[HubEvent]:
    changed = conn.execute(query("ops/cancel_running"), {"ids": list(ids), "actor": actor, "reason": reason}).fetchall()
    return _announced(changed)


def prune_batch(conn: Conn, *, older_s: float, batch: int, after: int, dry_run: bool) -> Row:
    """One batch of prune (its own transaction, in autocommit): roots_seen, last_root, rows_ready, rows_deleted."""
    row = conn.execute(query("ops/prune"), {"older_s": older_s, "batch": batch, "after": after,
                                            "dry_run": dry_run}).fetchone()
    assert row is not None  # an aggregate: always one row
    return row
