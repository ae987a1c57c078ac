"""core.lifecycle: services start in order and stop in reverse, each stop within its deadline; Periodic loops
survive their errors. And the dispatcher's own services come in the order its shutdown relies on."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
import structlog

from core.lifecycle import Entry, Periodic, Services, Stopped
from tests.waiting import wait_until


@dataclass
class Fake:
    """A service that records its calls in ``journal``; it can fail to start, fail to stop, or hang in stop."""

    name: str
    journal: list[str]
    fail_start: bool = False
    fail_stop: bool = False
    hang: threading.Event | None = None  # stop() blocks until this is set
    timeouts: list[float] = field(default_factory=list)

    def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.journal.append(f"start {self.name}")

    def stop(self, timeout: float) -> None:
        self.timeouts.append(timeout)
        self.journal.append(f"stop {self.name}")
        if self.hang is not None:
            self.hang.wait()
        if self.fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")


def stop_in_background(services: Services) -> tuple[threading.Thread, list[list[Stopped]]]:
    """Services.stop() in a thread, so a stop that ignored its deadline fails the test instead of hanging it."""
    result: list[list[Stopped]] = []
    thread = threading.Thread(target=lambda: result.append(services.stop()), daemon=True)
    thread.start()
    return thread, result


def test_services_start_in_order_and_stop_in_reverse_each_with_its_own_timeout() -> None:
    journal: list[str] = []
    a, b, c = Fake("a", journal), Fake("b", journal), Fake("c", journal)
    services = Services([Entry(a, 1.0), Entry(b, 2.0), Entry(c, 3.0)])
    services.start()
    report = services.stop()
    assert journal == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert (a.timeouts, b.timeouts, c.timeouts) == ([1.0], [2.0], [3.0])
    assert report == [Stopped("c", True, None), Stopped("b", True, None), Stopped("a", True, None)]


def test_a_second_stop_stops_nothing_again() -> None:
    journal: list[str] = []
    services = Services([Entry(Fake("a", journal))])
    services.start()
    services.stop()
    assert services.stop() == []
    assert journal == ["start a", "stop a"]


def test_a_service_that_cannot_start_stops_those_started_before_it_and_the_rest_never_start() -> None:
    journal: list[str] = []
    services = Services([Entry(Fake("a", journal)), Entry(Fake("b", journal)),
                         Entry(Fake("c", journal, fail_start=True)), Entry(Fake("d", journal))])
    with pytest.raises(RuntimeError, match="c cannot start"):
        services.start()
    assert journal == ["start a", "start b", "stop b", "stop a"]


def test_a_stop_that_raises_is_reported_and_the_services_before_it_still_stop() -> None:
    journal: list[str] = []
    services = Services([Entry(Fake("a", journal)), Entry(Fake("b", journal, fail_stop=True))])
    services.start()
    report = services.stop()
    assert journal == ["start a", "start b", "stop b", "stop a"]
    assert [(s.name, s.in_time, type(s.error)) for s in report] == [("b", True, RuntimeError), ("a", True, type(None))]


def test_a_stop_past_its_deadline_is_left_behind_and_the_services_before_it_still_stop() -> None:
    journal: list[str] = []
    stuck = threading.Event()
    services = Services([Entry(Fake("a", journal), 1.0), Entry(Fake("b", journal, hang=stuck), 0.05),
                         Entry(Fake("c", journal), 1.0)])
    services.start()
    thread, result = stop_in_background(services)
    try:
        wait_until(lambda: result, what="Services.stop() to return while b is still stuck in its stop")
        assert journal == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
        assert [(s.name, s.in_time) for s in result[0]] == [("c", True), ("b", False), ("a", True)]
    finally:
        stuck.set()
        thread.join(30)


def test_periodic_runs_its_task_again_after_an_expected_or_an_unexpected_error() -> None:
    outcomes = iter([ConnectionError("db away"), ValueError("a bug"), None, None])
    done = threading.Event()
    calls: list[int] = []

    def task() -> None:
        calls.append(1)
        outcome = next(outcomes, None)
        if outcome is not None:
            raise outcome
        if len(calls) >= 3:
            done.set()

    loop = Periodic("tick", 0.01, task, expected=(ConnectionError,))
    with structlog.testing.capture_logs() as logs:
        loop.start()
        try:
            wait_until(done.is_set, what="a third run of the task after two failing ones")
        finally:
            loop.stop(5.0)
    assert loop.failures == 2 and loop.runs >= 3
    # The expected fault is a warning; the bug is logged with its traceback.
    assert [(e["event"], e["log_level"]) for e in logs] == [("tick_failed", "warning"), ("tick_crashed", "error")]
    assert logs[1].get("exc_info") is True


def test_periodic_waits_first_after_s_before_its_first_run_then_period_s() -> None:
    ran = threading.Event()
    loop = Periodic("tick", 3600.0, ran.set, first_after_s=0.0)
    loop.start()
    try:
        wait_until(ran.is_set, what="the first run, due at once")
    finally:
        loop.stop(5.0)
    assert loop.runs == 1  # the next is an hour away


def test_a_stopped_periodic_lets_its_current_run_finish_and_starts_no_other() -> None:
    inside, release = threading.Event(), threading.Event()

    def task() -> None:
        inside.set()
        release.wait()

    loop = Periodic("tick", 0.01, task, first_after_s=0.0)
    loop.start()
    wait_until(inside.is_set, what="the first run to begin")
    loop.stop(0.01)  # returns at its deadline: the run is still going
    assert loop.runs == 0
    release.set()
    wait_until(lambda: not loop._thread.is_alive(), what="the loop to end after its run, without another")
    assert loop.runs == 1


def test_the_dispatchers_services_start_in_the_order_its_shutdown_relies_on() -> None:
    from dispatcher.config import DispatcherConfig
    from dispatcher.worker import Dispatcher

    cfg = DispatcherConfig.from_env({"DATABASE_URL": "postgresql://u@127.0.0.1:1/none", "PISTON_URL": "http://p:1",
                                     "DISPATCHER_METRICS_PORT": "9999"})
    d = Dispatcher(cfg)
    names = [e.service.name for e in d.services()]
    # Stopped in reverse: the listener and the periodic services first, then the writers (after the runs,
    # whose last writes they commit), then hub_events (which announces those writes), the pool last.
    assert names == ["pool", "hub-events", "group-commit", "metrics", "heartbeat", "lease-watch", "orphan-sweeper",
                     "schedule-firer", "stale-session-ender", "listener"]
    assert [e.service.name for e in Dispatcher(cfg, listen=False).services()][-1] == "stale-session-ender"
