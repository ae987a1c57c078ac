"""Claiming due outbox rows (the query itself: sql/queries/dispatcher/claim.sql)."""

from __future__ import annotations

from dataclasses import dataclass

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


def claim(pool: ConnectionPool, *, owner: str, batch: int, lease_s: float) -> list[Claimed]:
    if batch <= 0:
        return []
    with pool.connection() as conn:
        rows = conn.execute(
            query("dispatcher/claim"), {"owner": owner, "batch": batch, "lease_s": lease_s}
        ).fetchall()
    return [Claimed(**row) for row in rows]


def heartbeat(pool: ConnectionPool, *, owner: str, ids: list[int], lease_s: float) -> dict[int, str | None]:
    """Renew leases; returns {row id: Job status} for the rows still ours (a missing id: lease lost)."""
    if not ids:
        return {}
    with pool.connection() as conn:
        rows = conn.execute(
            query("dispatcher/heartbeat"), {"owner": owner, "ids": ids, "lease_s": lease_s}
        ).fetchall()
    return {row["id"]: row["job_status"] for row in rows}


def release(pool: ConnectionPool, *, owner: str, ids: list[int]) -> list[int]:
    """Give rows back (shutdown); they are claimable again at once."""
    if not ids:
        return []
    with pool.connection() as conn:
        rows = conn.execute(query("dispatcher/release"), {"owner": owner, "ids": ids}).fetchall()
    return [row["id"] for row in rows]
