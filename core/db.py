"""Database connections: one pool per process, created by the process's factory."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias, TypeVar

import psycopg
from psycopg.abc import Buffer
from psycopg.rows import DictRow, dict_row
from psycopg.types.array import ListDumper
from psycopg_pool import ConnectionPool, PoolTimeout
from tenacity import AttemptManager, Retrying, retry_if_exception_type, stop_after_delay

from core.backoff import Backoff, tenacity_wait

# Prisma stores DateTime as UTC in TIMESTAMP(3) columns; our now()-based writes
# must produce UTC too, whatever the server's default TimeZone is.
SESSION_OPTIONS = "-c timezone=UTC"

# Every connection this service opens returns rows as dicts (``row["col"]``); these say so to the type
# checker. Annotate with them, never with a bare psycopg.Connection / ConnectionPool (rows as tuples).
Conn: TypeAlias = psycopg.Connection[DictRow]
Pool: TypeAlias = ConnectionPool[Conn]


class TextListDumper(ListDumper):
    """psycopg's text-format array dumper, byte for byte, without its per-element ``re.sub`` (whose
    replacement template is expanded in Python for every quote): a list of JSON payloads (hub_events) or
    of log lines costs a fraction of it (docs/performance.md, session 4)."""

    def _dump_list(self, obj: list[Any], tokens: list[Buffer], needs_quotes: Callable[[Buffer], object]) -> None:
        if not obj:
            tokens.append(b"{}")
            return
        dump = self.sub_dumper.dump if self.sub_dumper else self._dump_item
        delimiter = self.delimiter
        tokens.append(b"{")
        for item in obj:
            if item is None:
                tokens.append(b"NULL")
            elif isinstance(item, list):
                self._dump_list(item, tokens, needs_quotes)
            elif (ad := dump(item)) is None:
                tokens.append(b"NULL")
            else:
                if needs_quotes(ad):
                    ad = b'"' + bytes(ad).replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
                tokens.append(ad)
            tokens.append(delimiter)
        tokens[-1] = b"}"


def use_fast_dumpers(conn: Conn) -> None:
    """Every connection of this service dumps Python lists with ``TextListDumper``."""
    conn.adapters.register_dumper(list, TextListDumper)


def connect(url: str, *, autocommit: bool = False, application_name: str = "agent-hub") -> Conn:
    """A single connection (CLI tools, migrations, LISTEN)."""
    conn = psycopg.connect(
        url, autocommit=autocommit, row_factory=dict_row, application_name=application_name,
        connect_timeout=10, options=SESSION_OPTIONS,
    )
    use_fast_dumpers(conn)
    return conn


def set_statement_timeout(conn: Conn, ms: int, *, idle_in_transaction_ms: int = 0) -> None:
    """For the rest of the session: a stuck statement is cancelled after ``ms``; with
    ``idle_in_transaction_ms``, Postgres also ends the session once it has sat that long inside a transaction
    without sending anything (a process paused or frozen mid-transaction), so its row locks go with it."""
    conn.execute("SELECT set_config('statement_timeout', %s, false), "
                 "set_config('idle_in_transaction_session_timeout', %s, false)",
                 (f"{ms}ms", f"{idle_in_transaction_ms}ms"))


def make_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    timeout_s: float,
    statement_timeout_ms: int,
    application_name: str,
    check: bool = True,
    idle_in_transaction_ms: int = 0,
) -> Pool:
    """A pool whose connections have a statement timeout, so a stuck query cannot hang a request.

    ``check``: test each connection with a round trip as it is checked out, so a connection that died
    while idle (Postgres restarted) is never handed out. A pool whose every use goes through
    ``run_with_retry`` can do without (the dispatcher's: one round trip less per use); there a dead
    connection costs one failed try, after which the whole pool is checked at once.
    ``idle_in_transaction_ms``: see ``set_statement_timeout`` (0: off)."""

    def configure(conn: Conn) -> None:
        use_fast_dumpers(conn)
        conn.autocommit = True
        set_statement_timeout(conn, statement_timeout_ms, idle_in_transaction_ms=idle_in_transaction_ms)
        conn.autocommit = False

    return ConnectionPool(
        url,
        connection_class=Conn,
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


class PoolService:
    """A pool as a service (core/lifecycle.py): opened first, closed last."""

    name = "pool"

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def start(self) -> None:
        self.pool.open(wait=False)  # connections come up in the background; the first use waits for one

    def stop(self, timeout: float) -> None:
        self.pool.close(timeout=timeout)


T = TypeVar("T")

# Between tries while Postgres is unreachable: 0.2 s doubling to 5 s, full jitter (core/backoff.py).
UNREACHABLE_BACKOFF = Backoff(base_s=0.2, max_s=5.0)


@contextlib.contextmanager
def autocommit(pool: Pool) -> Iterator[Conn]:
    """A pooled connection in autocommit for the block (a single statement is atomic on its own, with no
    BEGIN and COMMIT round trips), handed back to the pool as it was."""
    with pool.connection() as conn:
        conn.autocommit = True
        try:
            yield conn
        finally:
            if not conn.closed:
                conn.autocommit = False


# What a lost connection raises: OperationalError (Postgres gone, restarted, the session killed) and the
# error Postgres ends a session with once it sat too long inside a transaction (set_statement_timeout's
# idle_in_transaction_ms: this process was paused mid-transaction), which psycopg classes as InternalError.
CONNECTION_LOST: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.errors.IdleInTransactionSessionTimeout)
_RETRYABLE: tuple[type[Exception], ...] = (*CONNECTION_LOST, PoolTimeout)


def retry_while_unreachable(retry_s: float, on_retry: Callable[[int], None] | None = None) -> Iterator[AttemptManager]:
    """Tenacity attempts (``for attempt in ...: with attempt: ...``) that retry a lost connection or an
    exhausted pool with jittered back-off for up to ``retry_s``, then re-raise; ``on_retry(n)`` is called
    before the n-th try."""
    for attempt in Retrying(
        retry=retry_if_exception_type(_RETRYABLE),
        wait=tenacity_wait(UNREACHABLE_BACKOFF),
        stop=stop_after_delay(retry_s),
        reraise=True,
    ):
        if attempt.retry_state.attempt_number > 1 and on_retry is not None:
            on_retry(attempt.retry_state.attempt_number)
        yield attempt


def run_with_retry(
    pool: Pool,
    fn: Callable[[Conn], T],
    *,
    retry_s: float,
    on_retry: Callable[[int], None] | None = None,
) -> T:
    """Run ``fn`` on a pooled connection in autocommit, retrying while Postgres is unreachable.

    For single statements (or one pipelined transaction) that are safe to repeat: autocommit spares
    the BEGIN and COMMIT round trips, and a restart of Postgres delays the call instead of failing it
    (a dead pooled connection is discarded by the pool and the next try gets a fresh one).
    """
    # The first try without tenacity's bookkeeping (a Retrying object per call): almost every call succeeds
    # at once, and this is on the claim's and the context read's hot path (docs/performance.md, session 4).
    try:
        return _try_once(pool, fn)
    except _RETRYABLE:
        pass
    # Tries 2, 3, …: the budget starts now; on_retry keeps numbering the tries from the first.
    for attempt in retry_while_unreachable(retry_s):
        if on_retry is not None:
            on_retry(attempt.retry_state.attempt_number + 1)
        with attempt:
            return _try_once(pool, fn)
    raise AssertionError("unreachable")  # pragma: no cover


def _try_once(pool: Pool, fn: Callable[[Conn], T]) -> T:
    try:
        with autocommit(pool) as conn:
            return fn(conn)
    except CONNECTION_LOST:
        # After a restart every idle connection is dead: drop them all now, not one per try.
        with contextlib.suppress(Exception):
            pool.check()
        raise
