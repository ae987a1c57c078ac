"""The admission rule: which invocations the hub's tables let us queue, and why not (pure: no I/O).

The rule lives here only. ``REQUIREMENTS`` lists, in the order they are reported, what a column of
the lookup row (sql/queries/ingress/enqueue.sql's ``look``) must hold for a request; ``check`` reads a
lookup row with it, and ``expected`` hands the same values to the enqueue statement, which inserts
only when the lookup row holds all of them (``to_jsonb(look) @> expected``). So the statement and
the answer the caller gets cannot disagree about what is admitted.

The process's ``Rules`` add to them: ``HUB_SESSION_POLICY`` says what a prompt for a busy session (another
of its jobs queued or running) does: ``enqueue`` (it waits its turn), ``interrupt`` (it is queued and the
session's older jobs are cancelled: the running one really stopped, ingress/enqueue.py) or ``reject`` (409
``session_busy``, nothing queued: one more requirement, ``SESSION_IDLE``); ``INGRESS_RATE_PER_USER`` (e.g.
``30/min``) refuses a user's prompt past that many in the window with 429 ``rate_limited`` and
``Retry-After``, nothing queued (``RATE``; counted in Postgres from the user's outbox rows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from core.vocabulary import PUBLIC_STATUS, JobStatus, JobType, OutboxStatus
from ingress.errors import ApiError
from ingress.validation import InvokeRequest

Row = dict[str, Any]


class SessionPolicy(StrEnum):
    """HUB_SESSION_POLICY: what a prompt for a session with a job queued or running does."""

    ENQUEUE = "enqueue"      # it waits its turn (one run per session, in order)
    INTERRUPT = "interrupt"  # the session's older jobs are cancelled (the running one stopped); it runs next
    REJECT = "reject"        # 409 session_busy; nothing is queued


@dataclass(frozen=True)
class Accepted:
    created: bool  # False: this jobId was already queued (idempotent repeat)
    invocation_id: int
    job_id: str
    status: str
    created_at: datetime
    interrupted: tuple[str, ...] = ()  # HUB_SESSION_POLICY=interrupt: the Jobs this one cancelled

    def body(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "invocationId": self.invocation_id,
            "status": PUBLIC_STATUS[OutboxStatus(self.status)],
            "queuedAt": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Rules:
    """What this web process adds to the admission rule (its configuration)."""

    policy: SessionPolicy = SessionPolicy.ENQUEUE  # HUB_SESSION_POLICY
    rate_limit: int = 0  # INGRESS_RATE_PER_USER: prompts per user in the window; 0 = no limit
    rate_window_s: float = 60.0


@dataclass(frozen=True)
class Requirement:
    """``column`` of the lookup row must equal ``wanted(request)``, else the request is refused with this error."""

    column: str
    wanted: Callable[[InvokeRequest], object]
    status: int
    code: str
    field: str
    message: Callable[[InvokeRequest, Row], str]
    headers: Callable[[Row], dict[str, str]] | None = None

    def refusal(self, req: InvokeRequest, row: Row) -> ApiError:
        headers = self.headers(row) if self.headers is not None else None
        return ApiError(self.status, self.code, self.message(req, row), field=self.field, headers=headers)


def _mismatch(whose: str, field: str) -> Callable[[InvokeRequest, Row], str]:
    return lambda req, row: f"the {whose}'s {field} does not match the request's"


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("agent_exists", lambda req: True, 404, "agent_not_found", "agentId",
                lambda req, row: f"no agent with id {req.agent_id!r}"),
    Requirement("job_id", lambda req: req.job_id, 404, "job_not_found", "jobId",
                lambda req, row: f"no job with id {req.job_id!r}"),
    Requirement("session_id", lambda req: req.session_id, 404, "session_not_found", "sessionId",
                lambda req, row: f"no session with id {req.session_id!r}"),
    Requirement("job_type", lambda req: JobType.AGENT_INVOCATION.value, 409, "job_wrong_type", "jobId",
                lambda req, row: f"job is of type {row['job_type']}, not {JobType.AGENT_INVOCATION.value}"),
    Requirement("job_user_id", lambda req: req.user_id, 409, "job_mismatch", "userId", _mismatch("job", "userId")),
    Requirement("job_agent_id", lambda req: req.agent_id, 409, "job_mismatch", "agentId", _mismatch("job", "agentId")),
    Requirement("job_session_id", lambda req: req.session_id, 409, "job_mismatch", "sessionId",
                _mismatch("job", "sessionId")),
    Requirement("session_user_id", lambda req: req.user_id, 409, "session_mismatch", "userId",
                _mismatch("session", "userId")),
    Requirement("session_agent_id", lambda req: req.agent_id, 409, "session_mismatch", "agentId",
                _mismatch("session", "agentId")),
    Requirement("job_status", lambda req: JobStatus.QUEUED.value, 409, "job_not_queued", "jobId",
                lambda req, row: f"job is {row['job_status']}, not {JobStatus.QUEUED.value}"),
)


# HUB_SESSION_POLICY=reject only: no other job of the session queued or running.
SESSION_IDLE = Requirement("session_busy", lambda req: False, 409, "session_busy", "sessionId",
                           lambda req, row: "another job of this session is queued or running (HUB_SESSION_POLICY="
                                            "reject); nothing was queued: send the prompt again once it has ended")


# INGRESS_RATE_PER_USER only: the user is under the rate (nothing is queued past it).
RATE = Requirement("rate_exceeded", lambda req: False, 429, "rate_limited", "userId",
                   lambda req, row: "this user sent more prompts than INGRESS_RATE_PER_USER allows; nothing was "
                                    f"queued: retry in {row['rate_retry_after_s']} s",
                   headers=lambda row: {"Retry-After": str(row["rate_retry_after_s"])})

DEFAULT_RULES = Rules()


def requirements(rules: Rules = DEFAULT_RULES) -> tuple[Requirement, ...]:
    """The requirements under ``rules``, in the order they are reported."""
    extra = (SESSION_IDLE,) if rules.policy is SessionPolicy.REJECT else ()
    return (*REQUIREMENTS, *extra, *((RATE,) if rules.rate_limit > 0 else ()))


def expected(req: InvokeRequest, rules: Rules = DEFAULT_RULES) -> dict[str, object]:
    """What the lookup row must hold for ``req`` to be inserted: no outbox row for its job yet, and every
    requirement met (the enqueue statement's ``%(expected)s``)."""
    return {"outbox_id": None, **{r.column: r.wanted(req) for r in requirements(rules)}}


def check(req: InvokeRequest, row: Row, rules: Rules = DEFAULT_RULES) -> Accepted | None:
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
    for requirement in requirements(rules):
        if row[requirement.column] != requirement.wanted(req):
            raise requirement.refusal(req, row)
    return None
