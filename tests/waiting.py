"""Waiting for a condition instead of sleeping and hoping (a loaded 2-core machine makes any fixed sleep too short).

    wait_until(lambda: stack.outbox(w.job_id)["status"] == "cancelled", what="the row to end cancelled",
               details=stack.logs)

The deadline is generous on purpose: it only bounds how long a broken behaviour takes to fail, it is not a
claim about speed (speed is measured in bench/).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE_S = 30.0


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float = DEADLINE_S,
    interval: float = 0.05,
    what: str = "the condition",
    details: Callable[[], object] | None = None,
) -> T:
    """Call ``condition`` until it returns something truthy and return that; AssertionError after ``timeout`` s,
    naming ``what`` and, if given, the text ``details()`` returns then (e.g. the processes' logs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"waited {timeout} s for {what}; last value {value!r}{extra}")
        time.sleep(interval)
