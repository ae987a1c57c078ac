"""The state machines: which moves an outbox row (and its Job) can make (a run's outcome: dispatcher/outcome.py).

The statuses themselves are core/vocabulary.py's. Every transition this service makes is named here once
(``TRANSITIONS``, each beside the SQL file that performs it), and the journal trigger
(sql/migrations/0006) refuses any other move of a row's status.

Outbox row                                          Job (Prisma)
  pending --claim--> running                          QUEUED --claim--> PROCESSING
  running(lease expired) --reclaim--> running         PROCESSING --finish--> SUCCEEDED|FAILED|CANCELLED
  running --finish--> succeeded|failed|cancelled
  running --retry_later--> pending                    PROCESSING --retry_later--> QUEUED
  running --release--> pending (shutdown)             PROCESSING --release--> QUEUED
  pending --cancel--> cancelled (operator)            QUEUED|PROCESSING --cancel--> CANCELLED
  succeeded|failed|cancelled --replay--> pending      any --replay--> QUEUED
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from core.backoff import Backoff, Rand
from core.vocabulary import JOB_OPEN, JOB_STATUS_FOR, TERMINAL, JobStatus, OutboxStatus


@dataclass(frozen=True)
class Transition:
    """One named move of an outbox row's status, from any of ``sources`` to any of ``targets``."""

    name: str
    sources: frozenset[OutboxStatus]
    targets: frozenset[OutboxStatus]


_PENDING = frozenset({OutboxStatus.PENDING})
_RUNNING = frozenset({OutboxStatus.RUNNING})

TRANSITIONS: tuple[Transition, ...] = (
    Transition("claim", _PENDING, _RUNNING),                            # dispatcher/claim.sql
    Transition("reclaim", _RUNNING, _RUNNING),                          # claim.sql, lease expired: a new attempt
    Transition("finish", _RUNNING, TERMINAL),                           # finish.sql; sweep_orphans.sql (failed)
    Transition("retry_later", _RUNNING, _PENDING),                      # retry_later.sql
    Transition("release", _RUNNING, _PENDING),                          # release.sql
    Transition("cancel", _PENDING, frozenset({OutboxStatus.CANCELLED})),  # ops/cancel_pending.sql
    Transition("replay", TERMINAL, _PENDING),                           # ops/replay.sql
)

# Every (from, to) pair some transition allows; the trigger of migration 0006 has the same list.
ALLOWED: frozenset[tuple[OutboxStatus, OutboxStatus]] = frozenset(
    (src, dst) for t in TRANSITIONS for src in t.sources for dst in t.targets
)


def allowed(src: OutboxStatus, dst: OutboxStatus) -> bool:
    return (src, dst) in ALLOWED


def transition(name: str) -> Transition:
    return next(t for t in TRANSITIONS if t.name == name)


# -- what an operator's command does with one row (dispatcher/ops.py) ------------------------------------
def can_replay(row: OutboxStatus) -> bool:
    """Only finished rows can be replayed (the replay transition)."""
    return row in transition("replay").sources


class CancelMove(StrEnum):
    """What ``cancel`` does with one row, by the row's and its Job's status."""

    CANCEL_ROW = "cancel_row"                 # pending: the row and its Job are cancelled at once
    CANCEL_JOB = "cancel_job"                 # running: the Job is cancelled; its dispatcher then finishes the row
    ALREADY_REQUESTED = "already_requested"   # running, and its Job is already CANCELLED
    REFUSED_JOB = "refused_job"               # running, but its Job is finished or deleted
    REFUSED_FINISHED = "refused_finished"     # the row has finished


def cancel_move(row: OutboxStatus, job: str | None) -> CancelMove:
    """Every row status handled; ``job`` is the Job's status (None: the Job was deleted)."""
    match row:
        case OutboxStatus.PENDING:
            return CancelMove.CANCEL_ROW
        case OutboxStatus.RUNNING if job is not None and JobStatus(job) in JOB_OPEN:
            return CancelMove.CANCEL_JOB
        case OutboxStatus.RUNNING if job == JobStatus.CANCELLED:
            return CancelMove.ALREADY_REQUESTED
        case OutboxStatus.RUNNING:
            return CancelMove.REFUSED_JOB
        case OutboxStatus.SUCCEEDED | OutboxStatus.FAILED | OutboxStatus.CANCELLED:
            return CancelMove.REFUSED_FINISHED


# A row waits between half and all of its backoff: rows that failed in the same outage come back spread
# out over that time, not all in the same second.
ROW_RETRY_JITTER = 0.5


def retry_delay_s(attempts: int, base_s: float, max_s: float) -> float:
    """The longest wait before a row's next attempt after a transient fault (doubling per attempt, capped)."""
    return Backoff(base_s, max_s, jitter=ROW_RETRY_JITTER).ceiling(attempts)


def next_attempt_delay_s(attempts: int, base_s: float, max_s: float, *, rand: Rand = random.random) -> float:
    """The wait before a row's next attempt: ``retry_delay_s`` with jitter (core/backoff.py)."""
    return Backoff(base_s, max_s, jitter=ROW_RETRY_JITTER).delay(attempts, rand)


__all__ = [
    "ALLOWED",
    "JOB_STATUS_FOR",
    "ROW_RETRY_JITTER",
    "TRANSITIONS",
    "CancelMove",
    "JobStatus",
    "OutboxStatus",
    "Transition",
    "allowed",
    "can_replay",
    "cancel_move",
    "next_attempt_delay_s",
    "retry_delay_s",
    "transition",
]
