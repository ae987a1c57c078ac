"""End the database sessions of a dispatcher that lost its leases while frozen mid-transaction, every
``period_s`` (sql/queries/dispatcher/end_stale_sessions.sql says why the timeouts do not cover it).

A dispatcher paused (SIGSTOP, a frozen VM, a stalled host) between a pipelined transaction's statements and its
Sync holds the fence's row lock with its session still 'active', so the claim's SKIP LOCKED never sees the
row again while the process stays frozen. Once a row's lease has been expired for ``grace_s`` more, its
owner's sessions still inside a transaction that old are ended: their locks go, the row is claimed, and the
owner, if it ever resumes, finds its connections closed and its writes fenced.
"""

from __future__ import annotations

import threading

import psycopg
from psycopg_pool import PoolTimeout

from core.db import Pool, run_with_retry
from core.lifecycle import Periodic
from core.logging import get_logger
from core.sqlfiles import query

log = get_logger("dispatcher.maintenance")

NAME = "stale-session-ender"
TAG_CHARS = 8  # the owner's random part (dispatcher/config.py); end_stale_sessions.sql is given it
RETRY_S = 5.0


def session_name(role: str, owner: str) -> str:
    """The application_name of a dispatcher's sessions: the role, then the owner's tag (the last
    ``TAG_CHARS`` characters of the owner), short enough for Postgres's 63-byte limit."""
    return f"{role} {owner[-TAG_CHARS:]}"


def end_stale_sessions(pool: Pool, *, owner: str, grace_s: float) -> list[dict[str, object]]:
    """End the stale sessions (see the module); returns one row per session ended (pid, application_name,
    state, ended)."""
    sql = query("dispatcher/end_stale_sessions")
    return run_with_retry(pool, lambda conn: conn.execute(sql, {"owner": owner, "grace_s": grace_s,
                                                                      "tag_chars": TAG_CHARS}).fetchall(),
                          retry_s=RETRY_S)


def stale_session_ender(pool: Pool, wake: threading.Event, *, owner: str, grace_s: float, period_s: float,
                        first_after_s: float) -> Periodic:
    def sweep() -> None:
        ended = end_stale_sessions(pool, owner=owner, grace_s=grace_s)
        if ended:
            log.warning("stale_sessions_ended", sessions=[{"pid": r["pid"], "name": r["application_name"],
                                                           "state": r["state"], "ended": r["ended"]}
                                                          for r in ended])
            wake.set()  # their rows' locks are gone: claim them now, not at the next poll

    return Periodic(NAME, period_s, sweep, expected=(psycopg.Error, PoolTimeout), first_after_s=first_after_s)
