"""dispatcher.worker.RunSlots: the run slots' threads take claimed rows from a queue, survive a failing run,
and shutdown lets the queued runs finish."""

from __future__ import annotations

import threading
from typing import Any

from dispatcher.control import RunControl
from dispatcher.worker import RunSlots
from tests.waiting import wait_until


def test_every_submitted_run_runs_on_a_slot_thread_and_shutdown_waits_for_the_queued_ones() -> None:
    ran: list[tuple[Any, str]] = []
    lock = threading.Lock()

    def target(row: Any, control: RunControl) -> None:
        with lock:
            ran.append((row, threading.current_thread().name))

    slots = RunSlots(3, target)
    for i in range(20):
        slots.submit(i, RunControl())  # type: ignore[arg-type]  # any value stands for a claimed row
    slots.shutdown()
    assert sorted(row for row, _ in ran) == list(range(20))
    assert {name for _, name in ran} <= {"run_0", "run_1", "run_2"}


def test_a_run_that_raises_does_not_cost_its_slot_thread() -> None:
    done: list[int] = []

    def target(row: Any, control: RunControl) -> None:
        if row == 0:
            raise RuntimeError("a bug")
        done.append(row)

    slots = RunSlots(1, target)
    slots.submit(0, RunControl())  # type: ignore[arg-type]
    slots.submit(1, RunControl())  # type: ignore[arg-type]
    wait_until(lambda: done == [1], what="the next run on the same slot thread after one that raised")
    slots.shutdown()
