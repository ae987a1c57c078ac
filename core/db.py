"""Database connections: one pool per process, created by the process's factory."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

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
) -> ConnectionPool:
    """A pool whose connections have a statement timeout, so a stuck query cannot hang a request."""

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
        check=ConnectionPool.check_connection,
        kwargs={
            "row_factory": dict_row,
            "application_name": application_name,
            "connect_timeout": max(1, int(timeout_s)),
            "options": SESSION_OPTIONS,
        },
        name=application_name,
    )
