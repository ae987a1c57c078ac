"""dispatcher/maintenance/stale_sessions.py: a dispatcher frozen in the middle of a pipelined transaction (after
its statements, before its Sync) holds its fence's row lock with its session 'active', where Postgres's
idle-in-transaction limit does not apply; the claim's SKIP LOCKED passes the row by for as long as it stays
frozen. Another dispatcher ends such sessions once the row's lease has been gone for the grace."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from core.sqlfiles import query
from dispatcher import claim as claims
from dispatcher.maintenance.stale_sessions import end_stale_sessions, session_name
from tests import factories
from tests.waiting import wait_until

FROZEN_OWNER = "frozen-host:4242:deadbeef"
TAKER = "taker-host:77:0badf00d"
GRACE_S = 0.5


def set_lease(conn: psycopg.Connection, rid: int, *, expired_s: float) -> None:
    conn.execute("UPDATE agent_hub.invocation_outbox SET lease_expires_at = now() - make_interval(secs => %s) "
                 "WHERE id = %s", (expired_s, rid))
    conn.commit()


@pytest.fixture
def running_row(conn: psycopg.Connection, pool: ConnectionPool) -> int:
    """A row claimed by FROZEN_OWNER (attempt 1)."""
    rid = factories.enqueue(conn, factories.world(conn))
    conn.commit()
    assert [c.id for c in claims.claim(pool, owner=FROZEN_OWNER, batch=1, lease_s=30)] == [rid]
    return rid


@contextlib.contextmanager
def frozen(db_url: str, running_row: int) -> Iterator[psycopg.Connection]:
    """FROZEN_OWNER's writer, stopped mid-pipeline: BEGIN and the fence (FOR SHARE on the row) sent and run,
    no Sync. The session stays 'active' inside its transaction. (Set the row's lease before: an UPDATE would
    wait on this lock.)"""
    c = psycopg.connect(db_url, autocommit=True, application_name=session_name("agent-hub-dispatcher-writer",
                                                                              FROZEN_OWNER))
    c.execute("SET idle_in_transaction_session_timeout = 300")  # what the dispatcher sets: no help here
    pid = c.info.backend_pid
    pipeline = c.pipeline()
    pipeline.__enter__()
    c.execute("BEGIN")
    c.execute(query("dispatcher/fence_check"), {"outbox_id": running_row, "owner": FROZEN_OWNER, "attempt": 1})
    c.pgconn.flush()
    with psycopg.connect(db_url, autocommit=True) as watcher:
        wait_until(lambda: watcher.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active' "
                                           "AND now() - xact_start > make_interval(secs => %s)",
                                           (pid, GRACE_S + 0.5)).fetchone(),
                   timeout=30, what="the frozen session's transaction to be older than the grace")
    try:
        yield c
    finally:
        c.pgconn.finish()  # whatever state it is in: drop the socket


def takeable(pool: ConnectionPool) -> list[int]:
    return [c.id for c in claims.claim(pool, owner=TAKER, batch=5, lease_s=30)]


def test_a_session_frozen_mid_pipeline_keeps_its_row_from_every_claim_and_the_idle_limit_does_not_end_it(
        db_url: str, conn: psycopg.Connection, pool: ConnectionPool, running_row: int) -> None:
    set_lease(conn, running_row, expired_s=60)
    with frozen(db_url, running_row) as session:
        time.sleep(1.0)  # three times the idle-in-transaction limit the session carries
        assert takeable(pool) == []
        state = conn.execute("SELECT state FROM pg_stat_activity WHERE pid = %s",
                             (session.info.backend_pid,)).fetchone()
        assert state == {"state": "active"}


def test_a_session_frozen_mid_pipeline_past_its_lease_and_the_grace_is_ended_and_its_row_is_claimed(
        db_url: str, conn: psycopg.Connection, pool: ConnectionPool, running_row: int) -> None:
    set_lease(conn, running_row, expired_s=GRACE_S + 1)
    with frozen(db_url, running_row) as session:
        assert takeable(pool) == []
        ended = end_stale_sessions(pool, owner=TAKER, grace_s=GRACE_S)
        assert [(r["pid"], r["application_name"], r["ended"]) for r in ended] == [
            (session.info.backend_pid, "agent-hub-dispatcher-writer deadbeef", True)]
        # Postgres ends a backend asynchronously: the row is claimable once its lock has gone.
        assert wait_until(lambda: takeable(pool), timeout=30, what="the row to be claimable") == [running_row]
    conn.rollback()
    row = conn.execute("SELECT lease_owner, attempts FROM agent_hub.invocation_outbox WHERE id = %s",
                       (running_row,)).fetchone()
    assert row == {"lease_owner": TAKER, "attempts": 2}


@pytest.mark.parametrize("case", ["lease live", "lease expired within the grace", "own sessions"])
def test_sessions_of_a_dispatcher_are_left_alone_while_its_lease_holds_within_the_grace_or_when_they_are_our_own(
        db_url: str, conn: psycopg.Connection, pool: ConnectionPool, running_row: int, case: str) -> None:
    if case == "lease live":
        set_lease(conn, running_row, expired_s=-30)
    elif case == "lease expired within the grace":
        set_lease(conn, running_row, expired_s=0)
    else:
        set_lease(conn, running_row, expired_s=60)
    me = FROZEN_OWNER if case == "own sessions" else TAKER
    grace_s = 30 if case == "lease expired within the grace" else GRACE_S
    with frozen(db_url, running_row) as session:
        assert end_stale_sessions(pool, owner=me, grace_s=grace_s) == []
        alive = conn.execute("SELECT state FROM pg_stat_activity WHERE pid = %s",
                             (session.info.backend_pid,)).fetchone()
        assert alive == {"state": "active"}


def test_a_session_name_fits_postgres_and_ends_with_the_owner_tag() -> None:
    owner = "d5f2c1a0-1b2c-4d5e-8f90-123456789abc:123456:0123abcd"  # a Heroku dyno's hostname is a UUID
    name = session_name("agent-hub-dispatcher-writer", owner)
    assert name == "agent-hub-dispatcher-writer 0123abcd"
    assert len(name.encode()) <= 63
