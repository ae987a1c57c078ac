"""Accept one invocation: check the hub's tables, insert the outbox row, NOTIFY.

All of it happens in ONE statement (sql/queries/ingress/enqueue.sql), so a non-2xx answer means
nothing was queued and a 2xx answer means the row (and its notification) committed. What may be
queued is ingress/admission.py's rule, handed to the statement as ``expected``.
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from core.db import Pool, autocommit
from core.sqlfiles import query
from core.vocabulary import PUBLIC_STATUS
from ingress.admission import Accepted, check, expected
from ingress.errors import ApiError
from ingress.validation import InvokeRequest


def params(req: InvokeRequest, *, max_attempts: int) -> dict[str, Any]:
    """The enqueue statement's parameters for ``req``."""
    return {
        "agent_id": req.agent_id,
        "job_id": req.job_id,
        "session_id": req.session_id,
        "user_id": req.user_id,
        "prompt": req.prompt,
        "max_attempts": max_attempts,
        "expected": Jsonb(expected(req)),
    }


def enqueue(pool: Pool, req: InvokeRequest, *, max_attempts: int) -> Accepted:
    statement_params = params(req, max_attempts=max_attempts)
    # Two tries at most: the second only when a concurrent identical POST committed its row between
    # our look and our insert; the second look then finds that row and answers as a repeat.
    for _ in range(2):
        row = _run(pool, statement_params)
        existing = check(req, row)  # raises for a refused request: the statement inserted nothing
        if existing is not None:
            return existing
        if row["id"] is not None:
            return Accepted(True, row["id"], req.job_id, row["status"], row["created_at"])
    raise ApiError(409, "job_already_queued", "this jobId is being queued concurrently", field="jobId")  # pragma: no cover


def _run(pool: Pool, statement_params: dict[str, Any]) -> dict[str, Any]:
    """The one-statement enqueue (sql/queries/ingress/enqueue.sql), in autocommit: atomic on its own."""
    with autocommit(pool) as conn:
        row = conn.execute(query("ingress/enqueue"), statement_params).fetchone()
    assert row is not None  # the statement always returns its single base row
    return row


__all__ = ["PUBLIC_STATUS", "Accepted", "check", "enqueue", "params"]
