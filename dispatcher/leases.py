"""The rows this dispatcher runs, the heartbeat's beat over them, and the self-fence.

Every running row is here while it runs: the ones claimed for the run slots and the call_agent
children they start. One beat renews all their leases in one statement and tells each run's control
when its Job was cancelled or its lease lost, so a child is watched exactly as its caller is.

Each row remembers when its lease was last set (the monotonic time the claim or the renewing beat was
*sent*: the database set the expiry no earlier). If no beat succeeds for ``lease_s - margin`` — Postgres
away, the process starved or paused — the lease watch stops the run itself (``LEASE_EXPIRING``) before the
lease can expire and another dispatcher take the row: two runs of one invocation never overlap. Every write
of a run is fenced as well (sql/queries/dispatcher/run_fence.sql), whatever its threads were doing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

from core import metrics
from core.db import Pool
from core.lifecycle import Periodic
from core.logging import get_logger
from dispatcher import claim as claims
from dispatcher.control import RunControl, StopReason
from dispatcher.states import JobStatus

log = get_logger("dispatcher.leases")


class HeldRows:
    """Row id → the control of its run and when its lease was last set, for every row this dispatcher is
    running. Thread-safe. ``clock``: monotonic seconds (injectable for tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._rows: dict[int, RunControl] = {}
        self._set_at: dict[int, float] = {}
        self._ids: dict[int, dict[str, object]] = {}
        self._finishing: set[int] = set()

    def add(self, row_id: int, control: RunControl, *, lease_set_at: float | None = None,
            ids: Mapping[str, object] | None = None) -> None:
        """``lease_set_at``: when the statement that set the lease was sent (default: now). ``ids``: the
        run's log ids (job_id, agent_id, attempt), for the lines the heartbeat and the lease watch write
        about it from their own threads."""
        with self._lock:
            self._rows[row_id] = control
            self._set_at[row_id] = self.clock() if lease_set_at is None else lease_set_at
            self._ids[row_id] = dict(ids or {})

    def remove(self, row_id: int) -> None:
        with self._lock:
            self._rows.pop(row_id, None)
            self._set_at.pop(row_id, None)
            self._ids.pop(row_id, None)
            self._finishing.discard(row_id)

    @contextmanager
    def holding(self, row_id: int, control: RunControl, *, lease_set_at: float | None = None,
                ids: Mapping[str, object] | None = None) -> Iterator[None]:
        self.add(row_id, control, lease_set_at=lease_set_at, ids=ids)
        try:
            yield
        finally:
            self.remove(row_id)

    def finishing(self, row_id: int) -> None:
        """The row's run has ended and its outcome is being written: its lease is still renewed (the write
        may wait out an outage), but a beat that no longer finds the row ours is no news to the run. The
        outcome's commit may be what ended the lease, and the write, being fenced, says so itself if another
        dispatcher took the row."""
        with self._lock:
            if row_id in self._rows:
                self._finishing.add(row_id)

    def is_finishing(self, row_id: int) -> bool:
        with self._lock:
            return row_id in self._finishing

    def ids(self, row_id: int) -> dict[str, object]:
        with self._lock:
            return dict(self._ids.get(row_id, {}))

    def snapshot(self) -> dict[int, RunControl]:
        with self._lock:
            return dict(self._rows)

    def renewed(self, row_ids: Iterable[int], at: float) -> None:
        with self._lock:
            for row_id in row_ids:
                if row_id in self._set_at:
                    self._set_at[row_id] = max(self._set_at[row_id], at)

    def expiring(self, *, lease_s: float, margin_s: float) -> list[tuple[int, RunControl, float]]:
        """The held rows whose lease was last set more than ``lease_s - margin_s`` ago, with that age."""
        now = self.clock()
        with self._lock:
            return [(row_id, self._rows[row_id], now - at) for row_id, at in self._set_at.items()
                    if now - at >= lease_s - margin_s]


def self_fence_margin(lease_s: float, heartbeat_s: float) -> float:
    """How long before a lease could expire unrenewed its run is stopped: two beats, and at least a quarter
    of the lease (the stop itself, and the clocks of two machines, need some room)."""
    return max(2 * heartbeat_s, lease_s / 4)


def beat(pool: Pool, held: HeldRows, *, owner: str, lease_s: float) -> None:
    """Renew every held row's lease; stop the runs whose lease was lost or whose Job was cancelled."""
    rows = held.snapshot()
    if not rows:
        return
    sent_at = held.clock()
    renewed: set[int] = set()
    alive = claims.heartbeat(pool, owner=owner, ids=list(rows), lease_s=lease_s, renewed=renewed)
    held.renewed(renewed, sent_at)
    for row_id, control in rows.items():
        if row_id not in alive:
            if held.is_finishing(row_id):
                continue  # its outcome's commit raced this beat (or that write, fenced, reports the loss)
            if control.reason is None:
                log.warning("lease_lost", outbox_id=row_id, **held.ids(row_id),
                            detail="the row is no longer this dispatcher's: run stopped")
            control.stop(StopReason.LEASE_LOST)
        elif alive[row_id] == JobStatus.CANCELLED.value:
            control.stop(StopReason.CANCELLED)


def self_fence(held: HeldRows, *, lease_s: float, margin_s: float) -> list[int]:
    """Stop every run whose lease could expire before we renew it; returns their row ids. No database."""
    stopped = []
    for row_id, control, age in held.expiring(lease_s=lease_s, margin_s=margin_s):
        if control.reason is None:
            control.stop(StopReason.LEASE_EXPIRING)
            stopped.append(row_id)
            metrics.SELF_FENCED.inc()
            log.warning("lease_self_fenced", outbox_id=row_id, **held.ids(row_id), lease_set_s_ago=round(age, 3),
                        lease_s=lease_s)
    return stopped


def lease_watch(held: HeldRows, *, lease_s: float, heartbeat_s: float) -> Periodic:
    """The self-fence as a service: checks every half beat, with no database round trip to wait for."""
    margin = self_fence_margin(lease_s, heartbeat_s)
    return Periodic("lease-watch", heartbeat_s / 2, lambda: self_fence(held, lease_s=lease_s, margin_s=margin))
