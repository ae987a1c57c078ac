"""The dispatcher's group-commit writer (dispatcher/groupcommit.py), on real Postgres."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from dispatcher.groupcommit import Closed, GroupCommitter

INSERT = "INSERT INTO gc_t (id) VALUES (%(id)s) RETURNING id, txid_current() AS tx"
APP = "test-group-commit"


@pytest.fixture
def table(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute("CREATE TABLE gc_t (id INTEGER PRIMARY KEY)")
    return conn


@pytest.fixture
def committer(db_url: str) -> Iterator[GroupCommitter]:
    gc = GroupCommitter(db_url, writers=1, retry_s=10, application_name=APP).start()
    yield gc
    gc.stop(timeout=10)


def _in_threads(gc: GroupCommitter, ids: list[int]) -> tuple[dict[int, list], dict[int, BaseException]]:
    """Submit one insert per id, each from its own thread, while the writer is busy with a 0.5 s statement,
    so they all queue behind it."""
    results: dict[int, list] = {}
    errors: dict[int, BaseException] = {}

    def one(i: int) -> None:
        try:
            results[i] = gc.submit([(INSERT, {"id": i})])
        except BaseException as exc:  # handed to the assertions
            errors[i] = exc

    blocker = threading.Thread(target=gc.submit, args=([("SELECT pg_sleep(0.5)", {})],))
    blocker.start()
    time.sleep(0.15)  # the writer has taken the sleep and is inside it
    threads = [threading.Thread(target=one, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in [*threads, blocker]:
        t.join(20)
    return results, errors


def test_writes_queued_while_the_writer_is_busy_commit_together_in_one_transaction(
    table: psycopg.Connection, committer: GroupCommitter
) -> None:
    results, errors = _in_threads(committer, [1, 2, 3, 4, 5])
    assert errors == {}
    assert sorted(results) == [1, 2, 3, 4, 5]
    assert {rows[0]["id"] for rows in results.values()} == {1, 2, 3, 4, 5}
    assert len({rows[0]["tx"] for rows in results.values()}) == 1  # one transaction for all five
    assert committer.batches == 2  # the sleep, then the five
    assert table.execute("SELECT count(*) AS n FROM gc_t").fetchone()["n"] == 5


def test_a_failing_write_fails_only_its_own_caller_and_the_others_commit(
    table: psycopg.Connection, committer: GroupCommitter
) -> None:
    table.execute("INSERT INTO gc_t (id) VALUES (3)")  # the write for id 3 will violate the primary key
    results, errors = _in_threads(committer, [1, 2, 3, 4])
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
        killed = table.execute(
            "SELECT count(*) AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database()) t", (APP,)).fetchone()["n"]
        assert killed == 1
        assert gc.submit([(INSERT, {"id": 2})])[0]["id"] == 2
        assert retries  # the first try met the dead connection
    finally:
        gc.stop(timeout=10)
    assert table.execute("SELECT count(*) AS n FROM gc_t").fetchone()["n"] == 2


def test_stop_commits_what_was_queued_and_later_submits_are_refused(table: psycopg.Connection, db_url: str) -> None:
    gc = GroupCommitter(db_url, writers=1, retry_s=10, application_name=APP).start()
    results: list[list] = []
    blocker = threading.Thread(target=gc.submit, args=([("SELECT pg_sleep(0.3)", {})],))
    blocker.start()
    time.sleep(0.1)
    late = threading.Thread(target=lambda: results.append(gc.submit([(INSERT, {"id": 9})])))
    late.start()
    time.sleep(0.05)
    gc.stop(timeout=10)
    late.join(5)
    blocker.join(5)
    assert results and results[0][0]["id"] == 9
    with pytest.raises(Closed):
        gc.submit([(INSERT, {"id": 10})])
    assert table.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = %s", (APP,)).fetchone()["n"] == 0


def test_a_submit_before_start_is_refused(db_url: str) -> None:
    with pytest.raises(Closed):
        GroupCommitter(db_url).submit([("SELECT 1", {})])


def test_an_unawaited_write_commits_before_the_same_callers_next_write(table: psycopg.Connection, db_url: str) -> None:
    gc = GroupCommitter(db_url, writers=2, retry_s=10, application_name=APP).start()
    try:
        blocker = threading.Thread(target=gc.submit, args=([("SELECT pg_sleep(0.5)", {})],), kwargs={"key": 4})
        blocker.start()
        time.sleep(0.1)
        assert gc.submit([(INSERT, {"id": 1})], key=4, wait=False) == []  # returns at once, queued behind the sleep
        other_started = time.monotonic()
        gc.submit([(INSERT, {"id": 2})], key=5)  # the other writer is free: no wait for the sleep
        assert time.monotonic() - other_started < 0.35
        assert table.execute("SELECT count(*) AS n FROM gc_t WHERE id = 1").fetchone()["n"] == 0
        gc.submit([(INSERT, {"id": 3})], key=4)  # same key: after the unawaited write
        assert [r["id"] for r in table.execute("SELECT id FROM gc_t ORDER BY id").fetchall()] == [1, 2, 3]
        blocker.join(5)
    finally:
        gc.stop(timeout=10)


def test_an_unawaited_write_that_fails_is_counted_and_does_not_stop_the_writer(
    table: psycopg.Connection, committer: GroupCommitter
) -> None:
    table.execute("INSERT INTO gc_t (id) VALUES (1)")
    committer.submit([(INSERT, {"id": 1})], wait=False)
    assert committer.submit([(INSERT, {"id": 2})])[0]["id"] == 2
    assert committer.failed_unawaited == 1
