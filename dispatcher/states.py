"""The state machines: outbox row statuses, Job statuses, and how a run's outcome maps onto them.

Every transition this service makes is named here once; the SQL that performs it
lives in sql/queries/dispatcher/ under the same name.

Outbox row                                   Job (Prisma)
  pending --claim--> running                   QUEUED --claim--> PROCESSING
  running(lease expired) --claim--> running    PROCESSING --finish--> SUCCEEDED|FAILED|CANCELLED
  running --finish--> succeeded|failed|cancelled
  running --retry_later--> pending             PROCESSING --retry_later--> QUEUED
  running --release--> pending (shutdown)      PROCESSING --release--> QUEUED
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from core.backoff import Backoff, Rand


class OutboxStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (OutboxStatus.SUCCEEDED, OutboxStatus.FAILED, OutboxStatus.CANCELLED)


class JobStatus(StrEnum):
    """Prisma's JobStatus enum."""

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


# The Job status written when an outbox row reaches a terminal status.
JOB_STATUS_FOR = {
    OutboxStatus.SUCCEEDED: JobStatus.SUCCEEDED,
    OutboxStatus.FAILED: JobStatus.FAILED,
    OutboxStatus.CANCELLED: JobStatus.CANCELLED,
}


class Disposition(StrEnum):
    """What the runner decided for one attempt."""

    FINISH = "finish"            # terminal: write the final row + Job state
    RETRY_LATER = "retry_later"  # transient fault after in-process retries: back to pending
    RELEASE = "release"          # shutdown past its grace: back to pending, attempt not counted
    ABANDON = "abandon"          # the lease was lost: another dispatcher owns the row now


class StopReason(StrEnum):
    """Why a run was stopped before the agent finished."""

    CANCELLED = "cancelled"        # the Job became CANCELLED
    LEASE_LOST = "lease_lost"      # our lease expired and the row was reclaimed
    SHUTDOWN = "shutdown"          # SIGTERM and the grace period ran out
    MESSAGE_CAP = "message_cap"    # the agent sent more messages than allowed


@dataclass
class Outcome:
    disposition: Disposition
    status: OutboxStatus | None = None  # for FINISH: succeeded/failed/cancelled
    error: str | None = None            # human text for Job.errorMessage / last_error
    result: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def finish(cls, status: OutboxStatus, error: str | None = None, result: dict[str, Any] | None = None) -> Outcome:
        if not status.terminal:
            raise ValueError(f"finish needs a terminal status, got {status}")
        if status is OutboxStatus.FAILED and not error:
            raise ValueError("a failed outcome must say why")
        return cls(Disposition.FINISH, status, error, dict(result or {}))

    @classmethod
    def retry_later(cls, error: str) -> Outcome:
        return cls(Disposition.RETRY_LATER, None, error)

    @classmethod
    def release(cls) -> Outcome:
        return cls(Disposition.RELEASE)

    @classmethod
    def abandon(cls) -> Outcome:
        return cls(Disposition.ABANDON)


def claim_outcome_for_job(job_status: str | None) -> Outcome | None:
    """After a claim, what to do when the Job could not be moved to PROCESSING.

    None means the Job is ours to run. Handles every JobStatus explicitly.
    """
    if job_status is None:
        return Outcome.finish(OutboxStatus.FAILED, "the Job row no longer exists (deleted by the hub)")
    status = JobStatus(job_status)
    match status:
        case JobStatus.QUEUED | JobStatus.PROCESSING:
            return None
        case JobStatus.CANCELLED:
            return Outcome.finish(OutboxStatus.CANCELLED, None, {"skipped": True})
        case JobStatus.SUCCEEDED:
            return Outcome.finish(OutboxStatus.SUCCEEDED, None, {"skipped": True, "note": "Job was already SUCCEEDED"})
        case JobStatus.FAILED:
            return Outcome.finish(OutboxStatus.FAILED, "the Job was already FAILED before this run", {"skipped": True})


# A row waits between half and all of its backoff: rows that failed in the same outage come back spread
# out over that time, not all in the same second.
ROW_RETRY_JITTER = 0.5


def retry_delay_s(attempts: int, base_s: float, max_s: float) -> float:
    """The longest wait before a row's next attempt after a transient fault (doubling per attempt, capped)."""
    return Backoff(base_s, max_s, jitter=ROW_RETRY_JITTER).ceiling(attempts)


def next_attempt_delay_s(attempts: int, base_s: float, max_s: float, *, rand: Rand = random.random) -> float:
    """The wait before a row's next attempt: ``retry_delay_s`` with jitter (core/backoff.py)."""
    return Backoff(base_s, max_s, jitter=ROW_RETRY_JITTER).delay(attempts, rand)
