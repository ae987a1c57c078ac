"""Schedules in Postgres (agent_hub.schedule, SQL in sql/queries/schedules/): add, list, pause, resume, remove,
and firing what is due.

Firing is safe with any number of dispatchers: each due schedule is locked with ``FOR UPDATE SKIP LOCKED`` and,
in the same transaction, its run is written and its ``next_due_at`` moved past now. A schedule whose agent,
user or session is gone is paused with the reason instead (``schedule list`` shows it).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.db import Conn, Pool, run_with_retry
from core.logging import get_logger
from core.sqlfiles import query
from dispatcher.schedules import ScheduleError, Timing, next_due

log = get_logger("schedules")
SESSION_MODES = ("new", "reuse")


@dataclass(frozen=True)
class NewSchedule:
    agent_id: str
    user_id: str
    prompt: str
    timing: Timing
    session: str  # "new", "reuse" or a Session id

    @property
    def session_mode(self) -> str:
        return self.session if self.session in SESSION_MODES else "fixed"

    @property
    def session_id(self) -> str | None:
        return None if self.session in SESSION_MODES else self.session


@dataclass(frozen=True)
class Fired:
    schedule_id: int
    job_id: str | None = None
    outbox_id: int | None = None
    paused_reason: str | None = None


def add(conn: Conn, new: NewSchedule, *, now: datetime | None = None) -> tuple[int, datetime]:
    """Insert a schedule after checking its agent, user and session; returns (id, first due time)."""
    if not new.prompt.strip():
        raise ScheduleError("--prompt must not be empty")
    row = conn.execute(query("schedules/owners"), {"agent_id": new.agent_id, "user_id": new.user_id,
                                                   "session_id": new.session_id}).fetchone()
    assert row is not None
    if not row["agent_exists"]:
        raise ScheduleError(f"--agent: no agent {new.agent_id!r}")
    if not row["user_exists"]:
        raise ScheduleError(f"--user: no user {new.user_id!r}")
    if new.session_id is not None and not row["session_exists"]:
        raise ScheduleError(f"--session: no session {new.session_id!r} (or use new / reuse)")
    if new.session_id is not None and not row["session_theirs"]:
        raise ScheduleError(f"--session: session {new.session_id!r} is not this user's chat with this agent")
    first = new.timing.next_after(now or datetime.now(UTC))
    added = conn.execute(query("schedules/add"), {
        "agent_id": new.agent_id, "user_id": new.user_id, "prompt": new.prompt, "cron": new.timing.cron,
        "tz": new.timing.tz, "every_s": new.timing.every_s, "session_mode": new.session_mode,
        "session_id": new.session_id, "next_due_at": first,
    }).fetchone()
    assert added is not None
    return int(added["id"]), first


def list_all(conn: Conn) -> list[dict[str, Any]]:
    return conn.execute(query("schedules/list")).fetchall()


def set_paused(conn: Conn, schedule_id: int, paused: bool, *, reason: str | None = None,
               now: datetime | None = None) -> bool:
    """Pause or resume; resuming sets the next due time from now (no burst of missed runs)."""
    next_at = None
    if not paused:
        row = conn.execute(query("schedules/get"), {"id": schedule_id}).fetchone()
        if row is None:
            return False
        next_at = _timing(row).next_after(now or datetime.now(UTC))
    done = conn.execute(query("schedules/set_paused"), {"id": schedule_id, "paused": paused, "reason": reason,
                                                         "next_due_at": next_at}).fetchone()
    return done is not None


def remove(conn: Conn, schedule_id: int) -> bool:
    return conn.execute(query("schedules/remove"), {"id": schedule_id}).fetchone() is not None


def _timing(row: dict[str, Any]) -> Timing:
    return Timing(cron=row["cron"], tz=row["tz"], every_s=row["every_s"])


def _fire_one(conn: Conn, row: dict[str, Any], *, max_attempts: int, now: datetime) -> Fired:
    owners = conn.execute(query("schedules/owners"), {"agent_id": row["agent_id"], "user_id": row["user_id"],
                                                       "session_id": row["session_id"]}).fetchone()
    assert owners is not None
    reason = None
    if not owners["agent_exists"]:
        reason = f"agent {row['agent_id']} no longer exists"
    elif not owners["user_exists"]:
        reason = f"user {row['user_id']} no longer exists"
    elif row["session_mode"] == "fixed" and not (owners["session_exists"] and owners["session_theirs"]):
        reason = f"session {row['session_id']} no longer exists"
    if reason is not None:
        conn.execute(query("schedules/set_paused"), {"id": row["id"], "paused": True, "reason": reason,
                                                     "next_due_at": None})
        return Fired(row["id"], paused_reason=reason)
    # reuse: the schedule's own session, made on its first run (again if the hub deleted it).
    new_session = row["session_mode"] == "new" or (
        row["session_mode"] == "reuse" and not (owners["session_exists"] and owners["session_theirs"]))
    session_id = str(uuid.uuid4()) if new_session else row["session_id"]
    job_id = str(uuid.uuid4())
    fired = conn.execute(query("schedules/fire"), {
        "schedule_id": row["id"], "agent_id": row["agent_id"], "user_id": row["user_id"], "prompt": row["prompt"],
        "session_id": session_id, "new_session": new_session, "message_id": str(uuid.uuid4()), "job_id": job_id,
        "max_attempts": max_attempts, "next_due_at": next_due(_timing(row), due=row["next_due_at"], now=now),
    }).fetchone()
    assert fired is not None
    return Fired(row["id"], job_id=job_id, outbox_id=int(fired["outbox_id"]))


def fire_due(pool: Pool, *, max_attempts: int, limit: int = 50) -> list[Fired]:
    """Fire every due schedule this dispatcher can lock (one transaction for the batch)."""

    def work(conn: Conn) -> list[Fired]:
        with conn.transaction():
            now_row = conn.execute("SELECT now() AS now").fetchone()
            assert now_row is not None
            due = conn.execute(query("schedules/lock_due"), {"limit": limit}).fetchall()
            return [_fire_one(conn, row, max_attempts=max_attempts, now=now_row["now"]) for row in due]

    done = run_with_retry(pool, work, retry_s=2.0)
    for f in done:
        if f.paused_reason:
            log.warning("schedule_paused", schedule_id=f.schedule_id, reason=f.paused_reason)
        else:
            log.info("schedule_fired", schedule_id=f.schedule_id, job_id=f.job_id, outbox_id=f.outbox_id)
    return done
