"""Database connections: one pool per process, created by the process's factory."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

# Prisma stores DateTime as UTC in TIMESTAMP(3) columns; our now()-based writes
# must produce UTC too, whatever the server's default TimeZone is.
SESSION_OPTIONS = "-c timezone=UTC"


def connect(url: str, *, autocommit: bool = False, application_name: str = "agent-hub") -> psycopg.Connection:
    """A single connection (CLI tools, migrations, LISTEN)."""
    return psycopg.connect(
        url, autocommit=autocommit, row_factory=dict_row, application_name=application_name,
        connect_timeout=10, options=SESSION_OPTIONS,
    )


def make_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    timeout_s: float,
    statement_timeout_ms: int,
    application_name: str,
    check: bool = True,
) -> ConnectionPool:
    """A pool whose connections have a statement timeout, so a stuck query cannot hang a request.

    ``check``: test each connection with a round trip as it is checked out, so a connection that died
    while idle (Postgres restarted) is never handed out. A pool whose every use goes through
    ``run_with_retry`` can do without (the dispatcher's: one round trip less per use); there a dead
    connection costs one failed try, after which the whole pool is checked at once."""

    def configure(conn: psycopg.Connection) -> None:
        conn.autocommit = True
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{statement_timeout_ms}ms",))
        conn.autocommit = False

    return ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        open=False,
        configure=configure,
        check=ConnectionPool.check_connection if check else None,
        kwargs={
            "row_factory": dict_row,
            "application_name": application_name,
            "connect_timeout": max(1, int(timeout_s)),
            "options": SESSION_OPTIONS,
        },
        name=application_name,
    )


T = TypeVar("T")


def run_with_retry(
    pool: ConnectionPool,
    fn: Callable[[psycopg.Connection], T],
    *,
    retry_s: float,
    on_retry: Callable[[int], None] | None = None,
) -> T:
    """Run ``fn`` on a pooled connection in autocommit, retrying while Postgres is unreachable.

    For single statements (or one pipelined transaction) that are safe to repeat: autocommit spares
    the BEGIN and COMMIT round trips, and a restart of Postgres delays the call instead of failing it
    (a dead pooled connection is discarded by the pool and the next try gets a fresh one).
    """
    for attempt in Retrying(
        retry=retry_if_exception_type((psycopg.OperationalError, PoolTimeout)),
        wait=wait_random_exponential(multiplier=0.2, max=5),
        stop=stop_after_delay(retry_s),
        reraise=True,
    ):
        with attempt:
            if attempt.retry_state.attempt_number > 1 and on_retry is not None:
                on_retry(attempt.retry_state.attempt_number)
            try:
                with pool.connection() as conn:
                    conn.autocommit = True
                    try:
                        return fn(conn)
                    finally:
                        if not conn.closed:
                            conn.autocommit = False
            except psycopg.OperationalError:
                # After a restart every idle connection is dead: drop them all now, not one per try.
                with contextlib.suppress(Exception):
                    pool.check()
                raise
    raise AssertionError("unreachable")  # pragma: no cover
