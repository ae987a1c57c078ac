"""Fire the schedules that are due (dispatcher/schedule_store.py), every ``period_s``.

Any number of dispatchers run this: each due schedule is locked by one of them, which writes its run and
moves its next due time in one transaction. A firing wakes this dispatcher's claim loop at once.
"""

from __future__ import annotations

import threading

import psycopg
from psycopg_pool import PoolTimeout

from core.db import Pool
from core.lifecycle import Periodic
from dispatcher import schedule_store

NAME = "schedule-firer"


def schedule_firer(pool: Pool, wake: threading.Event, *, max_attempts: int, period_s: float,
                   first_after_s: float) -> Periodic:
    def fire() -> None:
        if schedule_store.fire_due(pool, max_attempts=max_attempts):
            wake.set()  # a scheduled run was queued: claim it now, not at the next poll

    return Periodic(NAME, period_s, fire, expected=(psycopg.Error, PoolTimeout), first_after_s=first_after_s)
