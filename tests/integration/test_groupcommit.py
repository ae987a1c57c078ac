"""The dispatcher's group-commit writer (dispatcher/groupcommit.py), on real Postgres."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from dispatcher.groupcommit import Abandoned, Closed, GroupCommitter
from tests.waiting import wait_until

INSERT = "INSERT INTO gc_t (id) VALUES (%(id)s) RETURNING id, txid_current() AS tx"
APP = "test-group-commit"
# The writers' backends in this test's own database (other test processes may share the server and the name).
WRITERS = "FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()"


@pytest.fixture
def table(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute("CREATE TABLE gc_t (id INTEGER PRIMARY KEY)")
    return conn


@pytest.fixture
def committer(db_url: str) -> Iterator[GroupCommitter]:
    gc = GroupCommitter(db_url, writers=1, retry_s=10, application_name=APP).start()
    yield gc
    gc.stop(timeout=10)


class Gate:
    """An advisory lock the test holds: a writer's statement that takes it waits, in Postgres, until the test
    lets go. Keeps a writer busy for exactly as long as the test needs, however slow the machine."""

    KEY = 4242  # advisory locks are per database: no other test's database can hold it
    statement = ("SELECT pg_advisory_xact_lock(%(key)s)", {"key": KEY})  # what the held writer runs

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        conn.execute("SELECT pg_advisory_lock(%s)", (self.KEY,))

    def wait_for_writer(self) -> None:
        """Until a writer's backend is waiting on the gate (it has taken the statement and is inside it)."""
        wait_until(lambda: self.conn.execute(
            "SELECT count(*) AS n " + WRITERS + " AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
            (APP,)).fetchone()["n"] == 1, what="a writer to wait on the gate")

    def open(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.KEY,))


def queued(gc: GroupCommitter, n: int) -> None:
    """Until n requests wait in the writers' queues (the submits have been handed over, not just started).
    Reads the private queues: nothing public tells a queued write from a thread that has not submitted yet."""
    wait_until(lambda: sum(len(q) for q in gc._queues) == n, what=f"{n} queued writes")


def _in_threads(
    gc: GroupCommitter, conn: psycopg.Connection, ids: list[int]
) -> tuple[dict[int, list], dict[int, BaseException]]:
    """Submit one insert per id, each from its own thread, while the writer is held inside another caller's
    statement, so they all queue behind it; then let the writer go."""
    results: dict[int, list] = {}
    errors: dict[int, BaseException] = {}

    def one(i: int) -> None:
        try:
            results[i] = gc.submit([(INSERT, {"id": i})])
        except BaseException as exc:  # handed to the assertions
            errors[i] = exc

    gate = Gate(conn)
    blocker = threading.Thread(target=gc.submit, args=([Gate.statement],))
    blocker.start()
    gate.wait_for_writer()
    threads = [threading.Thread(target=one, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    queued(gc, len(ids))
    gate.open()
    for t in [*threads, blocker]:
        t.join(30)
    return results, errors


def test_writes_queued_while_the_writer_is_busy_commit_together_in_one_transaction(
    table: psycopg.Connection, committer: GroupCommitter
) -> None:
    results, errors = _in_threads(committer, table, [1, 2, 3, 4, 5])
    assert errors == {}
    assert sorted(results) == [1, 2, 3, 4, 5]
    assert {rows[0]["id"] for rows in results.values()} == {1, 2, 3, 4, 5}
    assert len({rows[0]["tx"] for rows in results.values()}) == 1  # one transaction for all five
    assert committer.batches == 2  # the gated statement, then the five
    assert table.execute("SELECT count(*) AS n FROM gc_t").fetchone()["n"] == 5


def test_a_failing_write_fails_only_its_own_caller_and_the_others_commit(
    table: psycopg.Connection, committer: GroupCommitter
) -> None:
    table.execute("INSERT INTO gc_t (id) VALUES (3)")  # the write for id 3 will violate the primary key
    results, errors = _in_threads(committer, table, [1, 2, 3, 4])
    assert set(errors) == {3}
    assert isinstance(errors[3], psycopg.errors.UniqueViolation)
    assert sorted(results) == [1, 2, 4]
    assert [r["id"] for r in table.execute("SELECT id FROM gc_t ORDER BY id").fetchall()] == [1, 2, 3, 4]


def test_one_callers_statements_run_in_order_in_one_transaction(table: psycopg.Connection, committer: GroupCommitter) -> None:
    rows = committer.submit([(INSERT, {"id": 1}), ("SELECT count(*) AS n FROM gc_t", {}), (INSERT, {"id": 2})])
    assert rows[0]["tx"] == rows[2]["tx"]
    assert rows[1] == {"n": 1}  # the second statement saw the first


def test_a_caller_whose_statements_fail_midway_leaves_nothing_behind(
    table: psycopg.Connection, committer: GroupCommitter
) -> None:
    with pytest.raises(psycopg.errors.UniqueViolation):
        committer.submit([(INSERT, {"id": 7}), (INSERT, {"id": 7})])
    assert table.execute("SELECT count(*) AS n FROM gc_t").fetchone()["n"] == 0


def test_the_writer_reconnects_when_its_connection_is_killed(table: psycopg.Connection, db_url: str) -> None:
    retries: list[int] = []
    gc = GroupCommitter(db_url, writers=1, retry_s=10, application_name=APP, on_retry=retries.append).start()
    try:
        gc.submit([(INSERT, {"id": 1})])
        killed = table.execute("SELECT count(*) AS n FROM (SELECT pg_terminate_backend(pid) " + WRITERS + ") t",
                               (APP,)).fetchone()["n"]
        assert killed == 1
        assert gc.submit([(INSERT, {"id": 2})])[0]["id"] == 2
        assert retries  # the first try met the dead connection
    finally:
        gc.stop(timeout=10)
    assert table.execute("SELECT count(*) AS n FROM gc_t").fetchone()["n"] == 2


def test_a_writer_that_stalls_inside_its_transaction_past_the_idle_limit_retries_on_a_fresh_connection(
        table: psycopg.Connection, db_url: str) -> None:
    # The stall stands in for a dispatcher paused mid-transaction (test_db_retry.py: its row locks go with
    # the session). What the writer meets when it wakes, IdleInTransactionSessionTimeout, is a lost
    # connection: the batch is retried whole and commits once.
    retries: list[int] = []
    stalls: list[float] = []

    def events(rows: list) -> list:
        if not stalls:
            stalls.append(0.6)
            time.sleep(0.6)  # between the statements' sync and the COMMIT: idle in transaction
        return []

    gc = GroupCommitter(db_url, writers=1, retry_s=10, application_name=APP, on_retry=retries.append,
                        idle_in_transaction_ms=200).start()
    try:
        assert gc.submit([(INSERT, {"id": 1})], feed=events)[0]["id"] == 1
    finally:
        gc.stop(timeout=10)
    assert retries == [2]
    assert table.execute("SELECT count(*) AS n FROM gc_t").fetchone()["n"] == 1


def test_stop_commits_what_was_queued_and_later_submits_are_refused(table: psycopg.Connection, db_url: str) -> None:
    gc = GroupCommitter(db_url, writers=1, retry_s=10, application_name=APP).start()
    results: list[list] = []
    gate = Gate(table)
    blocker = threading.Thread(target=gc.submit, args=([Gate.statement],))
    blocker.start()
    gate.wait_for_writer()
    late = threading.Thread(target=lambda: results.append(gc.submit([(INSERT, {"id": 9})])))
    late.start()
    queued(gc, 1)  # queued behind the gated statement when stop() is called
    stopper = threading.Thread(target=gc.stop, kwargs={"timeout": 30})
    stopper.start()
    wait_until(lambda: gc._stopping, what="stop() to begin")
    with pytest.raises(Closed):
        gc.submit([(INSERT, {"id": 10})])
    gate.open()
    for t in (stopper, late, blocker):
        t.join(30)
    assert results and results[0][0]["id"] == 9
    with pytest.raises(Closed):
        gc.submit([(INSERT, {"id": 11})])
    assert [r["id"] for r in table.execute("SELECT id FROM gc_t ORDER BY id").fetchall()] == [9]
    # The writer closed its connection; Postgres ends the backend on its own time: wait for it.
    wait_until(lambda: table.execute("SELECT count(*) AS n " + WRITERS, (APP,)).fetchone()["n"] == 0,
               what="the writer's backend to end")


def test_a_submit_before_start_is_refused(db_url: str) -> None:
    with pytest.raises(Closed):
        GroupCommitter(db_url).submit([("SELECT 1", {})])


def test_an_unawaited_write_commits_before_the_same_callers_next_write(table: psycopg.Connection, db_url: str) -> None:
    gc = GroupCommitter(db_url, writers=2, retry_s=10, application_name=APP).start()
    gate = Gate(table)
    try:
        blocker = threading.Thread(target=gc.submit, args=([Gate.statement],), kwargs={"key": 4})
        blocker.start()
        gate.wait_for_writer()
        assert gc.submit([(INSERT, {"id": 1})], key=4, wait=False) == []  # returns at once, queued behind the gate
        # The other writer is free: this commits while the first writer is still held (the gate is shut).
        other = threading.Event()
        threading.Thread(target=lambda: (gc.submit([(INSERT, {"id": 2})], key=5), other.set()), daemon=True).start()
        assert other.wait(30), "a write for the free writer waited for the held one"
        assert table.execute("SELECT count(*) AS n FROM gc_t WHERE id = 1").fetchone()["n"] == 0
        third = threading.Thread(target=gc.submit, args=([(INSERT, {"id": 3})],), kwargs={"key": 4})
        third.start()  # same key: must commit after the unawaited write, which waits behind the gate
        gate.open()
        third.join(30)
        blocker.join(30)
        assert [r["id"] for r in table.execute("SELECT id FROM gc_t ORDER BY id").fetchall()] == [1, 2, 3]
        assert [r["id"] for r in table.execute("SELECT id FROM gc_t ORDER BY xmin::text::bigint, id").fetchall()] == [2, 1, 3]
    finally:
        gc.stop(timeout=10)


def test_an_unawaited_write_that_fails_is_counted_and_does_not_stop_the_writer(
    table: psycopg.Connection, committer: GroupCommitter
) -> None:
    table.execute("INSERT INTO gc_t (id) VALUES (1)")
    committer.submit([(INSERT, {"id": 1})], wait=False)
    assert committer.submit([(INSERT, {"id": 2})])[0]["id"] == 2
    assert committer.failed_unawaited == 1


def test_a_caller_stops_waiting_once_its_until_turns_true_and_its_write_still_commits_later(
    table: psycopg.Connection, committer: GroupCommitter
) -> None:
    gate = Gate(table)
    blocker = threading.Thread(target=committer.submit, args=([Gate.statement],))
    blocker.start()
    gate.wait_for_writer()  # the writer is stuck, as it is while Postgres is away
    stopped = threading.Event()
    threading.Timer(0.2, stopped.set).start()
    # Were `until` ignored, the writer would be let go after 20 s and the submit return rows: a failure, not a hang.
    late = threading.Timer(20, gate.open)
    late.start()
    with pytest.raises(Abandoned):
        committer.submit([(INSERT, {"id": 7})], until=stopped.is_set)
    late.cancel()
    assert stopped.is_set()
    gate.open()
    blocker.join(30)
    wait_until(lambda: table.execute("SELECT count(*) AS n FROM gc_t WHERE id = 7").fetchone()["n"] == 1,
               what="the abandoned write to commit once the writer is free")


def test_a_write_that_commits_before_until_turns_true_returns_its_rows(committer: GroupCommitter,
                                                                       table: psycopg.Connection) -> None:
    assert committer.submit([(INSERT, {"id": 8})], until=lambda: False)[0]["id"] == 8
