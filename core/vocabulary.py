"""The words this service shares with its database and with the hub, defined once.

- ``OutboxStatus``: our enum type ``agent_hub.invocation_status`` (sql/migrations/0001);
- ``JobStatus`` and ``JobType``: Prisma's enums ``"JobStatus"`` and ``"JobType"`` (sql/prisma/schema.prisma);
- how the one maps onto the other, and how the ingress shows a row's status to its caller;
- the NOTIFY channels and the ``hub_events`` payloads (docs/operations.md), built here and nowhere else.

tests/integration/test_vocabulary.py checks that each enum here has exactly the database's labels, in
order, and that every status literal in our SQL is one of them. The state machine over these statuses
(which transitions exist) is dispatcher/states.py; the journal trigger (migration 0006) enforces it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Literal, TypedDict


class OutboxStatus(StrEnum):
    """``agent_hub.invocation_status``: where an outbox row is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({OutboxStatus.SUCCEEDED, OutboxStatus.FAILED, OutboxStatus.CANCELLED})
OPEN = frozenset({OutboxStatus.PENDING, OutboxStatus.RUNNING})


class JobStatus(StrEnum):
    """Prisma's ``JobStatus`` enum (the hub's ``Job.status``)."""

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class JobType(StrEnum):
    """Prisma's ``JobType`` enum. This service runs (and writes) AGENT_INVOCATION Jobs only."""

    AGENT_CREATE = "AGENT_CREATE"
    AGENT_UPDATE = "AGENT_UPDATE"
    MODEL_CREATE = "MODEL_CREATE"
    MODEL_UPDATE = "MODEL_UPDATE"
    DATASET_CREATE = "DATASET_CREATE"
    DATASET_UPDATE = "DATASET_UPDATE"
    AGENT_INVOCATION = "AGENT_INVOCATION"


# The Job status written when an outbox row reaches a terminal status.
JOB_STATUS_FOR: dict[OutboxStatus, JobStatus] = {
    OutboxStatus.SUCCEEDED: JobStatus.SUCCEEDED,
    OutboxStatus.FAILED: JobStatus.FAILED,
    OutboxStatus.CANCELLED: JobStatus.CANCELLED,
}
# The Job statuses in which this service may still move a Job (claim, finish, cancel).
JOB_OPEN = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING})

# How an outbox status is shown to the ingress' caller (the invoke endpoint's "status").
PUBLIC_STATUS: dict[OutboxStatus, str] = {
    OutboxStatus.PENDING: "queued",
    OutboxStatus.RUNNING: "running",
    OutboxStatus.SUCCEEDED: "succeeded",
    OutboxStatus.FAILED: "failed",
    OutboxStatus.CANCELLED: "cancelled",
}


class RunLabel(StrEnum):
    """How one attempt ended, as logs and the ``agenthub_dispatcher_runs`` metric label it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRY_LATER = "retry_later"
    RELEASED = "released"
    LEASE_LOST = "lease_lost"
    ERROR = "error"


# NOTIFY channels (not in a schema: channels are per database).
OUTBOX_CHANNEL = "invocation_outbox"  # payload: the new or re-queued row's id; wakes the dispatchers
HUB_EVENTS_CHANNEL = "hub_events"     # payload: one hub event as JSON; for the hub's live UI


class StatusEvent(TypedDict):
    """A Job's status changed."""

    kind: Literal["status"]
    job_id: str
    session_id: str | None
    status: str  # a JobStatus label


class MessageEvent(TypedDict):
    """A ChatMessage was written for an agent."""

    kind: Literal["message"]
    job_id: str
    session_id: str | None
    message_id: str


HubEvent = StatusEvent | MessageEvent


def status_event(job_id: str, session_id: str | None, status: str) -> StatusEvent:
    return {"kind": "status", "job_id": job_id, "session_id": session_id, "status": str(JobStatus(status))}


def message_event(job_id: str, session_id: str | None, message_id: str) -> MessageEvent:
    return {"kind": "message", "job_id": job_id, "session_id": session_id, "message_id": message_id}


def encode_event(event: HubEvent) -> str:
    """The NOTIFY payload of ``event``."""
    return json.dumps(event)


__all__ = [
    "HUB_EVENTS_CHANNEL",
    "JOB_OPEN",
    "JOB_STATUS_FOR",
    "OPEN",
    "OUTBOX_CHANNEL",
    "PUBLIC_STATUS",
    "TERMINAL",
    "HubEvent",
    "JobStatus",
    "JobType",
    "MessageEvent",
    "OutboxStatus",
    "RunLabel",
    "StatusEvent",
    "encode_event",
    "message_event",
    "status_event",
]
