"""Accept one invocation: check the hub's tables, insert the outbox row, NOTIFY.

All of it happens in ONE transaction, so a non-2xx answer means nothing was
queued and a 2xx answer means the row (and its notification) committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.db import Pool, autocommit
from core.sqlfiles import query
from core.vocabulary import PUBLIC_STATUS, JobStatus, JobType, OutboxStatus
from ingress.errors import ApiError
from ingress.validation import InvokeRequest


@dataclass(frozen=True)
class Accepted:
    created: bool  # False: this jobId was already queued (idempotent repeat)
    invocation_id: int
    job_id: str
    status: str
    created_at: datetime

    def body(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "invocationId": self.invocation_id,
            "status": PUBLIC_STATUS[OutboxStatus(self.status)],
            "queuedAt": self.created_at.isoformat(),
        }


def check(req: InvokeRequest, row: dict[str, Any]) -> Accepted | None:
    """Decide from the lookup row: an existing row to repeat, None to insert, or raise.

    Pure, so every branch is unit-tested without a database.
    """
    if row["outbox_id"] is not None:
        same = (
            row["outbox_agent_id"] == req.agent_id
            and row["outbox_session_id"] == req.session_id
            and row["outbox_user_id"] == req.user_id
            and row["outbox_prompt"] == req.prompt
        )
        if not same:
            raise ApiError(
                409, "job_already_queued",
                "this jobId was already queued with a different agent, session, user or prompt",
                field="jobId",
            )
        return Accepted(False, row["outbox_id"], req.job_id, row["outbox_status"], row["outbox_created_at"])
    if not row["agent_exists"]:
        raise ApiError(404, "agent_not_found", f"no agent with id {req.agent_id!r}", field="agentId")
    if row["job_id"] is None:
        raise ApiError(404, "job_not_found", f"no job with id {req.job_id!r}", field="jobId")
    if row["session_id"] is None:
        raise ApiError(404, "session_not_found", f"no session with id {req.session_id!r}", field="sessionId")
    if row["job_type"] != JobType.AGENT_INVOCATION:
        raise ApiError(409, "job_wrong_type", f"job is of type {row['job_type']}, not AGENT_INVOCATION", field="jobId")
    for field, column, wanted in (
        ("userId", "job_user_id", req.user_id),
        ("agentId", "job_agent_id", req.agent_id),
        ("sessionId", "job_session_id", req.session_id),
    ):
        if row[column] != wanted:
            raise ApiError(409, "job_mismatch", f"the job's {field} does not match the request's", field=field)
    for field, column, wanted in (
        ("userId", "session_user_id", req.user_id),
        ("agentId", "session_agent_id", req.agent_id),
    ):
        if row[column] != wanted:
            raise ApiError(409, "session_mismatch", f"the session's {field} does not match the request's", field=field)
    if row["job_status"] != JobStatus.QUEUED:
        raise ApiError(409, "job_not_queued", f"job is {row['job_status']}, not QUEUED", field="jobId")
    return None


def enqueue(pool: Pool, req: InvokeRequest, *, max_attempts: int) -> Accepted:
    params = {
        "agent_id": req.agent_id,
        "job_id": req.job_id,
        "session_id": req.session_id,
        "user_id": req.user_id,
        "prompt": req.prompt,
        "max_attempts": max_attempts,
    }
    # Two tries at most: the second only when a concurrent identical POST committed its row between
    # our look and our insert; the second look then finds that row and answers as a repeat.
    for _ in range(2):
        row = _run(pool, params)
        existing = check(req, row)  # raises for a refused request: the statement inserted nothing
        if existing is not None:
            return existing
        if row["id"] is not None:
            return Accepted(True, row["id"], req.job_id, row["status"], row["created_at"])
    raise ApiError(409, "job_already_queued", "this jobId is being queued concurrently", field="jobId")  # pragma: no cover


def _run(pool: Pool, params: dict[str, Any]) -> dict[str, Any]:
    """The one-statement enqueue (sql/queries/ingress/enqueue.sql), in autocommit: atomic on its own."""
    with autocommit(pool) as conn:
        row = conn.execute(query("ingress/enqueue"), params).fetchone()
    assert row is not None  # the statement always returns its single base row
    return row
