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

from enum import StrEnum


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


def retry_delay_s(attempts: int, base_s: float, max_s: float) -> float:
    """Backoff before the next attempt of a row after a transient fault (exponential, capped)."""
    factor: int = 2 ** max(0, attempts - 1)
    return min(max_s, base_s * factor)
