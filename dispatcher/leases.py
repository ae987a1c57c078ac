"""The rows this dispatcher runs, and the heartbeat's beat over them.

Every running row is here while it runs: the ones claimed for the run slots and the call_agent
children they start. One beat renews all their leases in one statement and tells each run's control
when its Job was cancelled or its lease lost, so a child is watched exactly as its caller is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from core.db import Pool
from dispatcher import claim as claims
from dispatcher.control import RunControl, StopReason
from dispatcher.states import JobStatus


class HeldRows:
    """Row id → the control of its run, for every row this dispatcher is running. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[int, RunControl] = {}

    def add(self, row_id: int, control: RunControl) -> None:
        with self._lock:
            self._rows[row_id] = control

    def remove(self, row_id: int) -> None:
        with self._lock:
            self._rows.pop(row_id, None)

    @contextmanager
    def holding(self, row_id: int, control: RunControl) -> Iterator[None]:
        self.add(row_id, control)
        try:
            yield
        finally:
            self.remove(row_id)

    def snapshot(self) -> dict[int, RunControl]:
        with self._lock:
            return dict(self._rows)


def beat(pool: Pool, held: HeldRows, *, owner: str, lease_s: float) -> None:
    """Renew every held row's lease; stop the runs whose lease was lost or whose Job was cancelled."""
    rows = held.snapshot()
    if not rows:
        return
    alive = claims.heartbeat(pool, owner=owner, ids=list(rows), lease_s=lease_s)
    for row_id, control in rows.items():
        if row_id not in alive:
            control.stop(StopReason.LEASE_LOST)
        elif alive[row_id] == JobStatus.CANCELLED.value:
            control.stop(StopReason.CANCELLED)
