"""A run's stop signal: shared by the run and whoever may stop it (the heartbeat, shutdown, the relay)."""

from __future__ import annotations

import threading
from enum import StrEnum


class StopReason(StrEnum):
    """Why a run was stopped before the agent finished."""

    CANCELLED = "cancelled"        # the Job became CANCELLED
    LEASE_LOST = "lease_lost"      # the row is no longer ours (reclaimed, or a write's fence refused it)
    LEASE_EXPIRING = "lease_expiring"  # we could not renew the lease: stopped before it can expire (self-fenced)
    SHUTDOWN = "shutdown"          # SIGTERM and the grace period ran out
    MESSAGE_CAP = "message_cap"    # the agent sent more messages than allowed


class RunControl:
    """Why (if) a run must stop. The first reason given wins. A call_agent child's control follows its
    caller's: it stops when the caller stops, for the same reason."""

    def __init__(self, parent: RunControl | None = None) -> None:
        self.parent = parent
        self.reason: StopReason | None = None
        self._lock = threading.Lock()

    def stop(self, reason: StopReason) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason

    def should_stop(self) -> bool:
        if self.reason is None and self.parent is not None and self.parent.should_stop():
            assert self.parent.reason is not None
            self.stop(self.parent.reason)
        return self.reason is not None

    def child(self) -> RunControl:
        return RunControl(parent=self)
