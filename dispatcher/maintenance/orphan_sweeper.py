"""Fail call_agent children whose caller's dispatcher died (their lease expired), every ``period_s``.

A child runs only inside its caller's run, so once that dispatcher is gone nobody will finish it:
the sweep ends it FAILED (the caller's own row is reclaimed, and its re-run makes a new child if it
still wants one). Any dispatcher may sweep; SKIP LOCKED keeps two from fighting over a row.
"""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout

from core.db import Pool
from core.lifecycle import Periodic
from core.logging import get_logger
from dispatcher import claim as claims
from dispatcher.events import EventNotifier

log = get_logger("dispatcher.maintenance")

NAME = "orphan-sweeper"


def orphan_sweeper(pool: Pool, events: EventNotifier | None, *, period_s: float, first_after_s: float) -> Periodic:
    def sweep() -> None:
        swept = claims.sweep_orphans(pool, events)
        if swept:
            log.warning("orphaned_children_failed", rows=swept)

    return Periodic(NAME, period_s, sweep, expected=(psycopg.Error, PoolTimeout), first_after_s=first_after_s)
