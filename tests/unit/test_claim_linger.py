"""The claim's linger (DISPATCHER_CLAIM_LINGER_MS): with a backlog, a freed slot waits briefly for more to free,
so one claim takes several rows; never when every slot is free or no backlog is known."""

from __future__ import annotations

import threading
import time

from dispatcher.config import DispatcherConfig
from dispatcher.control import RunControl
from dispatcher.worker import Dispatcher


def dispatcher(*, concurrency: int, linger_ms: float, running: int, backlog: bool) -> Dispatcher:
    cfg = DispatcherConfig.from_env({"DATABASE_URL": "postgresql://u@127.0.0.1:1/none", "PISTON_URL": "http://p:1",
                                     "DISPATCHER_CONCURRENCY": str(concurrency),
                                     "DISPATCHER_CLAIM_LINGER_MS": str(linger_ms)})
    d = Dispatcher(cfg, listen=False)
    for row_id in range(running):
        d._running[row_id] = RunControl()
    d._backlog = backlog
    return d


def test_the_default_linger_is_five_milliseconds() -> None:
    cfg = DispatcherConfig.from_env({"DATABASE_URL": "postgresql://u@127.0.0.1:1/none", "PISTON_URL": "http://p:1"})
    assert cfg.claim_linger_s == 0.005


def test_with_every_slot_free_the_claim_does_not_wait() -> None:
    d = dispatcher(concurrency=10, linger_ms=60_000, running=0, backlog=True)
    started = time.monotonic()
    assert d._gather(d.free_slots()) == 10
    assert time.monotonic() - started < 30  # a linger would have held it for a minute


def test_without_a_known_backlog_a_freed_slot_is_filled_at_once() -> None:
    d = dispatcher(concurrency=10, linger_ms=60_000, running=9, backlog=False)
    started = time.monotonic()
    assert d._gather(d.free_slots()) == 1
    assert time.monotonic() - started < 30


def test_with_a_backlog_a_freed_slot_waits_until_half_the_slots_are_free() -> None:
    d = dispatcher(concurrency=4, linger_ms=60_000, running=3, backlog=True)

    def another_run_ends() -> None:
        d._running.pop(0)
        d.slot_freed.set()

    threading.Timer(0.05, another_run_ends).start()
    started = time.monotonic()
    assert d._gather(d.free_slots()) == 2  # one claim of 2 rows, not two claims of 1
    assert time.monotonic() - started < 30


def test_the_linger_ends_at_its_deadline_with_the_slots_that_are_free() -> None:
    d = dispatcher(concurrency=10, linger_ms=50, running=9, backlog=True)
    started = time.monotonic()
    assert d._gather(d.free_slots()) == 1
    assert time.monotonic() - started >= 0.05


def test_a_linger_of_zero_turns_it_off() -> None:
    d = dispatcher(concurrency=10, linger_ms=0, running=9, backlog=True)
    assert d.cfg.claim_linger_s == 0
    started = time.monotonic()
    assert d._gather(d.free_slots()) == 1
    assert time.monotonic() - started < 30
