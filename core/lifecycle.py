"""One way to start and stop a process's background services: in order, and in reverse, each within a deadline.

A service is anything with a ``name``, ``start()`` and ``stop(timeout)`` (the pool, the hub_events
sender, the group-commit writers, the metrics server, the heartbeat, the maintenance services, the
listener). ``Services`` starts them in the order given, so each can use those before it, and stops
them in reverse: what was started last, and may still use the others, goes first. A stop that does
not return within its deadline is reported and left behind (its thread is a daemon), so one stuck
service cannot hold the process's shutdown past its own share of the grace period.

``Periodic`` is the loop of the services that do one thing every few seconds (the heartbeat, the
maintenance services): it never dies of an error, it logs it and tries again at the next tick.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.logging import get_logger

log = get_logger("lifecycle")

STOP_SLACK_S = 0.5  # past a service's own stop timeout, the time it gets to return before it is left behind


class Service(Protocol):
    @property
    def name(self) -> str: ...

    def start(self) -> object: ...

    def stop(self, timeout: float) -> object:
        """Stop, returning within ``timeout`` seconds (what was not finished by then is abandoned)."""
        ...


@dataclass(frozen=True)
class Entry:
    service: Service
    stop_timeout_s: float = 5.0


@dataclass(frozen=True)
class Stopped:
    name: str
    in_time: bool                 # False: still stopping at its deadline, left behind
    error: BaseException | None   # what its stop() raised, if it raised


class Services:
    """Start in order, stop in reverse, each stop within ``stop_timeout_s`` (plus ``STOP_SLACK_S``)."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = list(entries)
        self._started: list[Entry] = []

    def start(self) -> None:
        """Start every service in order; if one fails, stop those already started (in reverse) and re-raise."""
        for entry in self.entries:
            try:
                entry.service.start()
            except BaseException:
                log.error("service_start_failed", service=entry.service.name)
                self.stop()
                raise
            self._started.append(entry)

    def stop(self) -> list[Stopped]:
        """Stop the started services in reverse order; returns how each went. Never raises."""
        report: list[Stopped] = []
        while self._started:
            entry = self._started.pop()
            report.append(self._stop_one(entry))
        return report

    def _stop_one(self, entry: Entry) -> Stopped:
        errors: list[BaseException] = []

        def stop() -> None:
            try:
                entry.service.stop(entry.stop_timeout_s)
            except BaseException as exc:  # reported, and the next service is still stopped
                errors.append(exc)

        name = entry.service.name
        thread = threading.Thread(target=stop, name=f"stop-{name}", daemon=True)
        thread.start()
        thread.join(entry.stop_timeout_s + STOP_SLACK_S)
        if thread.is_alive():
            log.warning("service_stop_overran", service=name, timeout_s=entry.stop_timeout_s)
            return Stopped(name, False, None)
        error = errors[0] if errors else None
        if error is not None:
            log.error("service_stop_failed", service=name, error=type(error).__name__, detail=str(error)[:200])
        return Stopped(name, True, error)


class Periodic:
    """Call ``task`` every ``period_s`` seconds (the first time after ``first_after_s``) in a daemon thread.

    Errors of the kinds in ``expected`` (e.g. the database being away) are logged as ``<name>_failed``
    warnings, any other as an exception with its traceback; either way the loop goes on."""

    def __init__(
        self,
        name: str,
        period_s: float,
        task: Callable[[], object],
        *,
        expected: tuple[type[BaseException], ...] = (),
        first_after_s: float | None = None,
    ) -> None:
        self._name = name
        self._event = name.replace("-", "_")  # log events are snake_case: heartbeat_failed, orphan_sweeper_failed
        self.period_s = period_s
        self.task = task
        self.expected = expected
        self.first_after_s = period_s if first_after_s is None else first_after_s
        self.runs = 0
        self.failures = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    @property
    def name(self) -> str:
        return self._name

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """No new run starts; a run in progress may finish within ``timeout``."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        wait = self.first_after_s
        while not self._stopping.wait(wait):
            wait = self.period_s
            try:
                self.task()
            except self.expected as exc:
                self.failures += 1
                log.warning(f"{self._event}_failed", error=type(exc).__name__)
            except Exception:
                self.failures += 1
                log.exception(f"{self._event}_crashed")
            finally:
                self.runs += 1


__all__ = ["STOP_SLACK_S", "Entry", "Periodic", "Service", "Services", "Stopped"]
