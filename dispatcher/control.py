"""A run's stop signal: shared by the run and whoever may stop it (the heartbeat, shutdown, the relay).

``stop`` is the one function that stops a run, whatever the reason (a cancelled Job, a lost or fenced
lease, shutdown past its grace, a message cap): it records the reason and calls the run's stop listeners
at once, in the caller's thread. On the WebSocket transport the sandbox registers one that writes the
hub's ``cancel`` line to the agent's stdin (dispatcher/sandbox/piston/ws.py), so the agent's process ends
and its Piston slot is free again, even while the run's own thread is busy answering a call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import StrEnum

import structlog

log = structlog.get_logger("dispatcher.control")

StopListener = Callable[[], None]


class StopReason(StrEnum):
    """Why a run was stopped before the agent finished."""

    CANCELLED = "cancelled"        # the Job became CANCELLED
    LEASE_LOST = "lease_lost"      # the row is no longer ours (reclaimed, or a write's fence refused it)
    LEASE_EXPIRING = "lease_expiring"  # we could not renew the lease: stopped before it can expire (self-fenced)
    SHUTDOWN = "shutdown"          # SIGTERM and the grace period ran out
    MESSAGE_CAP = "message_cap"    # the agent sent more messages than allowed


class RunControl:
    """Why (if) a run must stop. The first reason given wins. A call_agent child's control follows its
    caller's: it stops when the caller stops, for the same reason, at once."""

    def __init__(self, parent: RunControl | None = None) -> None:
        self.parent = parent
        self.reason: StopReason | None = None
        self._lock = threading.Lock()
        self._listeners: list[StopListener] = []

    def stop(self, reason: StopReason) -> None:
        """Stop the run for ``reason`` and end its agent's process (WebSocket transport): safe from any thread."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            _call(listener)

    def on_stop(self, listener: StopListener) -> Callable[[], None]:
        """Call ``listener`` once when the run is stopped (at once if it already is); returns the unsubscribe."""
        with self._lock:
            if self.reason is None:
                self._listeners.append(listener)
                return lambda: self._forget(listener)
        _call(listener)
        return lambda: None

    def _forget(self, listener: StopListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def should_stop(self) -> bool:
        if self.reason is None and self.parent is not None and self.parent.should_stop():
            assert self.parent.reason is not None
            self.stop(self.parent.reason)
        return self.reason is not None

    def child(self) -> RunControl:
        """A call_agent child's control: stopped with its caller (the child's cancel line goes out too)."""
        child = RunControl(parent=self)
        unsubscribe = self.on_stop(lambda: child.stop(self.reason or StopReason.CANCELLED))
        child.on_stop(unsubscribe)  # a child stopped on its own no longer needs its caller's news
        return child


def _call(listener: StopListener) -> None:
    try:
        listener()
    except Exception:  # one broken listener must not keep the others (or the stopper) from going on
        log.exception("stop_listener_failed")
