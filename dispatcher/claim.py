"""Claiming due outbox rows (the query itself: sql/queries/dispatcher/claim.sql)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg_pool import ConnectionPool

from core.sqlfiles import query


@dataclass(frozen=True)
class Claimed:
    id: int
    job_id: str
    agent_id: str
    session_id: str | None
    user_id: str
    prompt: str
    attempts: int
    max_attempts: int
    job_started: bool             # the Job moved to PROCESSING in the claim
    job_status_before: str | None  # the Job's status before the claim (None: the Job is gone)


def _one_statement(pool: ConnectionPool, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one statement in autocommit: it is atomic on its own, and this spares the BEGIN and COMMIT
    round trips of a transaction block (docs/performance.md)."""
    with pool.connection() as conn:
        conn.autocommit = True
        try:
            return conn.execute(sql, params).fetchall()  # type: ignore[return-value]
        finally:
            if not conn.closed:
                conn.autocommit = False


def claim(pool: ConnectionPool, *, owner: str, batch: int, lease_s: float, running: Sequence[int] = ()) -> list[Claimed]:
    """`running`: the ids this dispatcher is running now; their expired leases are not reclaimed by it."""
    if batch <= 0:
        return []
    rows = _one_statement(
        pool, query("dispatcher/claim"), {"owner": owner, "batch": batch, "lease_s": lease_s, "running": list(running)}
    )
    return [Claimed(**row) for row in rows]


def heartbeat(pool: ConnectionPool, *, owner: str, ids: list[int], lease_s: float) -> dict[int, str | None]:
    """Renew leases; returns {row id: Job status} for the rows still ours (a missing id: lease lost)."""
    if not ids:
        return {}
    rows = _one_statement(pool, query("dispatcher/heartbeat"), {"owner": owner, "ids": ids, "lease_s": lease_s})
    return {row["id"]: row["job_status"] for row in rows}


def release(pool: ConnectionPool, *, owner: str, ids: list[int]) -> list[int]:
    """Give rows back (shutdown); they are claimable again at once."""
    if not ids:
        return []
    with pool.connection() as conn:
        rows = conn.execute(query("dispatcher/release"), {"owner": owner, "ids": ids}).fetchall()
    return [row["id"] for row in rows]


def sweep_orphans(pool: ConnectionPool) -> list[int]:
    """Fail call_agent children whose caller's dispatcher died (their lease expired)."""
    with pool.connection() as conn:
        rows = conn.execute(query("dispatcher/sweep_orphans")).fetchall()
    return [row["id"] for row in rows]
