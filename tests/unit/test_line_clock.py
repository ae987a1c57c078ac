"""LineClock: a run's JobLog times strictly increase in write order, at millisecond precision."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta

from dispatcher.line_clock import STEP, LineClock


def test_a_burst_within_one_millisecond_gets_strictly_increasing_millisecond_times() -> None:
    clock = LineClock()
    times = [clock.next() for _ in range(500)]
    assert all(later - earlier >= STEP for earlier, later in itertools.pairwise(times))
    assert all(t.microsecond % 1000 == 0 and t.tzinfo is UTC for t in times)


def test_an_idle_clock_follows_the_wall_clock_again() -> None:
    clock = LineClock()
    clock.next()
    time.sleep(0.05)
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    assert before <= clock.next() <= datetime.now(UTC)


def test_lines_from_several_threads_never_share_a_time() -> None:
    clock = LineClock()
    seen: list[datetime] = []
    lock = threading.Lock()

    def write() -> None:
        mine = [clock.next() for _ in range(200)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == len(seen) == 800
