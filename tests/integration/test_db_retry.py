"""core.db.run_with_retry: a dead pooled connection (Postgres restarted) delays a call, never fails it."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from core.db import CONNECTION_LOST, make_pool, run_with_retry
from tests import factories
from tests.waiting import wait_until


def test_a_call_on_a_dead_pooled_connection_is_retried_on_a_fresh_one(db_url: str, conn: psycopg.Connection) -> None:
    # No check= on purpose: the pool hands out the dead connection, as it would right after a restart.
    with ConnectionPool(db_url, min_size=1, max_size=1, kwargs={"row_factory": dict_row, "application_name": "retry-test"},
                        open=True) as pool:
        pool.wait()
        killed = conn.execute("SELECT count(*) AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = 'retry-test' AND datname = current_database()) t").fetchone()
        assert killed == {"n": 1}
        retries: list[int] = []
        row = run_with_retry(pool, lambda c: c.execute("SELECT 41 + 1 AS answer").fetchone(), retry_s=10,
                             on_retry=retries.append)
        assert row == {"answer": 42}
        assert retries == [2]


def test_an_error_that_is_not_a_lost_connection_is_raised_at_once(db_url: str) -> None:
    with ConnectionPool(db_url, min_size=1, max_size=1, open=True) as pool:
        retries: list[int] = []
        with pytest.raises(psycopg.errors.UndefinedTable):
            run_with_retry(pool, lambda c: c.execute("SELECT * FROM no_such_table"), retry_s=10, on_retry=retries.append)
        assert retries == []


def test_calls_run_in_autocommit_and_give_the_connection_back_as_it_was(db_url: str) -> None:
    with ConnectionPool(db_url, min_size=1, max_size=1, open=True) as pool:
        assert run_with_retry(pool, lambda c: c.autocommit, retry_s=1) is True
        with pool.connection() as c:
            assert c.autocommit is False


def test_after_a_restart_one_failed_try_clears_every_dead_connection_in_the_pool(db_url: str, conn: psycopg.Connection) -> None:
    # The dispatcher's pool has no check-out check: a dead connection costs one try, then the pool is checked.
    with ConnectionPool(db_url, min_size=3, max_size=3, kwargs={"row_factory": dict_row, "application_name": "retry-all"},
                        open=True) as pool:
        pool.wait()
        killed = conn.execute("SELECT count(*) AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = 'retry-all' AND datname = current_database()) t").fetchone()
        assert killed == {"n": 3}
        retries: list[int] = []
        assert run_with_retry(pool, lambda c: c.execute("SELECT 1 AS one").fetchone(), retry_s=10,
                              on_retry=retries.append) == {"one": 1}
        assert retries == [2]  # not one try per dead connection


@pytest.mark.parametrize("idle_ms", [0, 300], ids=["off", "300ms"])
def test_a_session_frozen_inside_a_transaction_loses_its_row_locks_after_the_idle_limit(
        db_url: str, conn: psycopg.Connection, idle_ms: int) -> None:
    # A dispatcher SIGSTOPped mid-transaction: its fence's row lock would make every claim pass the row by
    # (SKIP LOCKED) for as long as the process stays frozen. With the limit, Postgres ends that session.
    w = factories.world(conn)
    rid = factories.enqueue(conn, w)
    conn.commit()
    pool = make_pool(db_url, min_size=1, max_size=1, timeout_s=5, statement_timeout_ms=5000,
                     application_name="idle-tx-test", idle_in_transaction_ms=idle_ms)
    pool.open(wait=True)
    try:
        with pool.connection() as frozen:
            frozen.execute("SELECT id FROM agent_hub.invocation_outbox WHERE id = %s FOR SHARE", (rid,))

            def skipped() -> bool:
                with psycopg.connect(db_url, autocommit=True) as claimer:
                    return claimer.execute("SELECT id FROM agent_hub.invocation_outbox WHERE id = %s "
                                           "FOR UPDATE SKIP LOCKED", (rid,)).fetchone() is None

            assert skipped()  # held while the transaction is open
            if idle_ms:
                wait_until(lambda: not skipped(), timeout=30, what="the frozen session's lock to go")
                with pytest.raises(CONNECTION_LOST):  # what the frozen process finds when it wakes: retried
                    frozen.execute("SELECT 1")
            else:
                time.sleep(1.0)
                assert skipped()
                frozen.rollback()
    finally:
        pool.close()
