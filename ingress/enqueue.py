"""Accept one invocation: check the hub's tables, insert the outbox row, NOTIFY.

All of it happens in ONE statement (sql/queries/ingress/enqueue.sql), so a non-2xx answer means
nothing was queued and a 2xx answer means the row (and its notification) committed. What may be
queued is ingress/admission.py's rule, handed to the statement as ``expected``.

With ``HUB_SESSION_POLICY`` ``reject`` or ``interrupt`` the statement runs in a transaction under the
session's lock (sql/queries/ingress/lock_session.sql), and with ``INGRESS_RATE_PER_USER`` under the user's
(lock_user.sql, taken first), so prompts sent at once are decided one after the other; under ``interrupt``
the same transaction cancels the session's older jobs (sql/queries/ingress/interrupt.sql), whose new status
is announced on ``hub_events`` once it committed.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from core import feed
from core.db import Conn, Pool, autocommit
from core.logging import get_logger
from core.sqlfiles import query
from core.vocabulary import PUBLIC_STATUS, encode_event, status_event
from ingress.admission import DEFAULT_RULES, Accepted, Rules, SessionPolicy, check, expected
from ingress.errors import ApiError
from ingress.validation import InvokeRequest

log = get_logger("ingress")

INTERRUPT_REASON = "interrupted by a newer prompt"


def params(req: InvokeRequest, *, max_attempts: int, rules: Rules = DEFAULT_RULES) -> dict[str, Any]:
    """The enqueue statement's parameters for ``req``."""
    return {
        "agent_id": req.agent_id,
        "job_id": req.job_id,
        "session_id": req.session_id,
        "user_id": req.user_id,
        "prompt": req.prompt,
        "max_attempts": max_attempts,
        "check_busy": rules.policy is SessionPolicy.REJECT,
        "rate_limit": rules.rate_limit,
        "rate_window_s": rules.rate_window_s,
        "expected": Jsonb(expected(req, rules)),
    }


def enqueue(pool: Pool, req: InvokeRequest, *, max_attempts: int, rules: Rules = DEFAULT_RULES) -> Accepted:
    statement_params = params(req, max_attempts=max_attempts, rules=rules)
    # Two tries at most: the second only when a concurrent identical POST committed its row between
    # our look and our insert; the second look then finds that row and answers as a repeat.
    for _ in range(2):
        interrupted: list[dict[str, Any]] = []
        if rules.policy is SessionPolicy.ENQUEUE and not rules.rate_limit:
            row = _run(pool, statement_params)
        else:
            row, interrupted = _run_in_turn(pool, statement_params, req, rules)
        existing = check(req, row, rules)  # raises for a refused request: the statement inserted nothing
        if existing is not None:
            return existing
        if row["id"] is not None:
            if interrupted:
                _announce(pool, interrupted)
            return Accepted(True, row["id"], req.job_id, row["status"], row["created_at"],
                            tuple(r["job_id"] for r in interrupted))
    raise ApiError(409, "job_already_queued", "this jobId is being queued concurrently", field="jobId")  # pragma: no cover


def _run(pool: Pool, statement_params: dict[str, Any]) -> dict[str, Any]:
    """The one-statement enqueue (sql/queries/ingress/enqueue.sql), in autocommit: atomic on its own."""
    with autocommit(pool) as conn:
        row = conn.execute(query("ingress/enqueue"), statement_params).fetchone()
    assert row is not None  # the statement always returns its single base row
    return row


def _run_in_turn(pool: Pool, statement_params: dict[str, Any], req: InvokeRequest,
                 rules: Rules) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The enqueue under the user's and/or the session's lock (always in that order); under interrupt, with the
    cancel of the session's older jobs."""
    policy = rules.policy
    with pool.connection() as conn, conn.transaction():
        if rules.rate_limit:
            conn.execute(query("ingress/lock_user"), {"user_id": req.user_id})
        if policy is not SessionPolicy.ENQUEUE:
            conn.execute(query("ingress/lock_session"), {"session_id": req.session_id})
        row = conn.execute(query("ingress/enqueue"), statement_params).fetchone()
        assert row is not None
        interrupted: list[dict[str, Any]] = []
        if policy is SessionPolicy.INTERRUPT and row["id"] is not None:
            conn.execute(query("ops/set_actor"), {"actor": "ingress", "reason": INTERRUPT_REASON})
            interrupted = conn.execute(query("ingress/interrupt"), {
                "session_id": req.session_id, "new_id": row["id"], "job_id": req.job_id}).fetchall()
            # Their CANCELLED status on the feed, in this transaction, last (core/feed.py); NOTIFY with the commit.
            feed.insert_events(conn, [feed.status(r["job_id"], r["session_id"], status=r["job_status"])
                                      for r in interrupted])
    return row, interrupted


def _announce(pool: Pool, interrupted: list[dict[str, Any]]) -> None:
    """hub_events for the Jobs the interrupt cancelled (committed already); best effort, like every NOTIFY."""
    payloads = [encode_event(status_event(r["job_id"], r["session_id"], r["job_status"])) for r in interrupted]
    try:
        with autocommit(pool) as conn:
            _send(conn, payloads)
    except psycopg.Error as exc:
        log.warning("hub_events_not_sent", error=type(exc).__name__, jobs=[r["job_id"] for r in interrupted])


def _send(conn: Conn, payloads: list[str]) -> None:
    conn.execute(query("events/send"), {"payloads": payloads}).fetchall()


__all__ = ["PUBLIC_STATUS", "Accepted", "check", "enqueue", "params"]
