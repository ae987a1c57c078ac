"""Reliability rules of the claim query that the fault-injection suite relies on, pinned on real Postgres."""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool

from core.sqlfiles import query
from dispatcher import claim as claims
from tests import factories


def enqueue(conn: psycopg.Connection) -> int:
    return factories.enqueue(conn, factories.world(conn))


def expire(conn: psycopg.Connection, row_id: int) -> None:
    conn.execute("UPDATE agent_hub.invocation_outbox SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (row_id,))


def ids(pool: ConnectionPool, owner: str, running: list[int]) -> list[int]:
    return [c.id for c in claims.claim(pool, owner=owner, batch=10, lease_s=30, running=running)]


def test_a_dispatcher_never_reclaims_the_expired_lease_of_a_run_it_is_still_running(
    conn: psycopg.Connection, pool: ConnectionPool
) -> None:
    # A database outage longer than the lease leaves our own live runs with expired leases until the
    # next heartbeat; claiming them again would run them twice in one process.
    row_id = enqueue(conn)
    assert ids(pool, "me", []) == [row_id]
    expire(conn, row_id)
    assert ids(pool, "me", [row_id]) == []
    beat = conn.execute(query("dispatcher/heartbeat"), {"owner": "me", "ids": [row_id], "lease_s": 30}).fetchall()
    assert [b["id"] for b in beat] == [row_id]  # the heartbeat still renews it once Postgres is back


def test_an_expired_row_the_dispatcher_no_longer_runs_is_reclaimed_by_it_or_by_another(
    conn: psycopg.Connection, pool: ConnectionPool
) -> None:
    # The row was dropped (its outcome could not be written): with one dispatcher left, it must still be taken.
    mine = enqueue(conn)
    assert ids(pool, "me", []) == [mine]
    expire(conn, mine)
    assert ids(pool, "me", []) == [mine]
    other = enqueue(conn)
    assert ids(pool, "me", [mine]) == [other]
    expire(conn, other)
    assert ids(pool, "someone-else", [mine]) == [other]  # the exclusion is the caller's own runs only
