"""What one attempt of a run ended with, as a value: the runner returns it, the completer writes it.

Every transition of a running row goes through ``dispatcher/completer.py`` ``apply_outcome``; an
outcome is built by one of the named constructors below, each saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dispatcher.states import JobStatus, OutboxStatus


class Disposition(StrEnum):
    """What the runner decided for one attempt."""

    FINISH = "finish"            # terminal: write the final row + Job state
    RETRY_LATER = "retry_later"  # transient fault after in-process retries: back to pending
    RELEASE = "release"          # shutdown past its grace: back to pending, attempt not counted
    ABANDON = "abandon"          # the lease was lost: another dispatcher owns the row now


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
    def release(cls, why: str = "run interrupted by dispatcher shutdown") -> Outcome:
        """Back to pending without using an attempt; ``why`` goes to the JobLog."""
        return cls(Disposition.RELEASE, None, why)

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
