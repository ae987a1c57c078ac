"""The times of a run's JobLog lines: strictly increasing, in the order the run wrote them.

"JobLog"."timestamp" is Prisma's TIMESTAMP(3): milliseconds. Lines written within one millisecond (a
burst of ``hub.log``, or two lines sharing a group-commit batch) used to tie, and a reader ordering by
time (the hub's page, ``ops logs``) got them in any order. Each line now takes the wall-clock
millisecond, or 1 ms after the run's previous line when that is later. So a flood of more than a
thousand lines a second runs ahead of the clock by a millisecond a line; order beats exactness here.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

STEP = timedelta(milliseconds=1)


def _now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class LineClock:
    """One per run (WriteBack); thread-safe, as a run's lines come from its slot and its watchers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: datetime | None = None

    def next(self) -> datetime:
        now = _now_ms()
        with self._lock:
            at = now if self._last is None or now > self._last else self._last + STEP
            self._last = at
            return at
