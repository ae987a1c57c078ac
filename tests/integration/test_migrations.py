"""core.migrate against real, empty databases: idempotent, safe in parallel, strict about edits."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from core import migrate
from core.migrate import MigrationError, discover, pending

REPO = Path(__file__).resolve().parents[2]
VERSIONS = [m.version for m in discover()]
PRISMA_TABLES = {
    "User",
    "Profile",
    "Agent",
    "AgentFile",
    "AgentEnvVar",
    "AgentTag",
    "StarredAgent",
    "Session",
    "UserVariable",
    "ChatMessage",
    "Dataset",
    "DatasetFile",
    "StarredDataset",
    "Model",
    "ModelFile",
    "StarredModel",
    "Job",
    "JobLog",
}


def tables(url: str, schema: str = "public") -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)).fetchall()
    return {r[0] for r in rows}


def recorded(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT version, checksum FROM agent_hub.schema_migrations ORDER BY version")]


def migrate_lock_holders(conn: psycopg.Connection) -> int:
    """Sessions holding core.migrate's advisory lock in this connection's database. Advisory locks are per
    database, but pg_locks lists every database's: another test process (or checkout) migrating its own
    database at the same moment holds the same key there, so filter by database as well as by key."""
    key = migrate.ADVISORY_LOCK_KEY  # a bigint key shows as classid (high 32 bits), objid (low), objsubid 1
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND classid = %s::oid AND objid = %s::oid", (key >> 32, key & 0xFFFF_FFFF)).fetchone()
    assert row is not None
    return int(row[0])


class LockWatch(io.StringIO):
    """apply()'s output: every write also records how many sessions held the lock at that moment."""

    def __init__(self, watcher: psycopg.Connection) -> None:
        super().__init__()
        self.watcher = watcher
        self.held: list[int] = []

    def write(self, text: str) -> int:
        self.held.append(migrate_lock_holders(self.watcher))
        return super().write(text)


def run_cli(*args: str, database_url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "core.migrate", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql, encoding="utf-8")
    return directory


def test_the_first_migration_is_the_outbox() -> None:
    assert VERSIONS[0] == "0001_invocation_outbox"


def test_apply_on_an_empty_database_creates_our_tables_and_records_each_migration(empty_db_url: str) -> None:
    out = io.StringIO()
    assert migrate.apply(empty_db_url, out=out) == VERSIONS
    assert {"invocation_outbox", "schema_migrations"} <= tables(empty_db_url, "agent_hub")
    assert recorded(empty_db_url) == [(m.version, m.checksum) for m in discover()]
    assert [line for line in out.getvalue().splitlines() if line.startswith("applied ")] == [f"applied {v}" for v in VERSIONS]


def test_apply_without_prisma_never_creates_the_prisma_tables(empty_db_url: str) -> None:
    migrate.apply(empty_db_url, out=io.StringIO())
    assert tables(empty_db_url) & PRISMA_TABLES == set()


def test_second_apply_applies_nothing_and_says_up_to_date(empty_db_url: str) -> None:
    migrate.apply(empty_db_url, prisma=True, out=io.StringIO())
    first = recorded(empty_db_url)
    out = io.StringIO()
    assert migrate.apply(empty_db_url, prisma=True, out=out) == []
    assert out.getvalue().strip() == "migrations: up to date"
    assert recorded(empty_db_url) == first


def test_four_concurrent_applies_all_succeed_and_record_each_migration_once(empty_db_url: str) -> None:
    n = 4
    barrier = threading.Barrier(n)
    applied: list[list[str]] = [[] for _ in range(n)]
    outputs = [io.StringIO() for _ in range(n)]
    errors: list[BaseException] = []

    def runner(i: int) -> None:
        try:
            barrier.wait()
            applied[i] = migrate.apply(empty_db_url, prisma=True, out=outputs[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert errors == []
    assert sorted(v for versions in applied for v in versions) == VERSIONS  # each applied by exactly one runner
    assert [v for v, _ in recorded(empty_db_url)] == VERSIONS
    assert sum("created the Prisma tables" in o.getvalue() for o in outputs) == 1
    assert tables(empty_db_url) >= PRISMA_TABLES


def test_apply_holds_its_advisory_lock_while_applying_and_releases_it(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as watcher:
        out = LockWatch(watcher)
        migrate.apply(empty_db_url, out=out)
        assert out.held and set(out.held) == {1}  # each "applied" line is printed under the lock: the query sees it
        assert migrate_lock_holders(watcher) == 0


def test_discover_returns_files_in_number_order(tmp_path: Path) -> None:
    d = write_migrations(tmp_path, {"0002_b.sql": "SELECT 2", "0001_a.sql": "SELECT 1", "0010_c.sql": "SELECT 10"})
    found = discover(d)
    assert [m.version for m in found] == ["0001_a", "0002_b", "0010_c"]
    assert found[0].sql == "SELECT 1"


def test_discover_refuses_a_file_without_a_number(tmp_path: Path) -> None:
    d = write_migrations(tmp_path, {"0001_a.sql": "SELECT 1", "extra_b.sql": "SELECT 2"})
    with pytest.raises(MigrationError, match=r"must start with a number: extra_b\.sql"):
        discover(d)


def test_discover_refuses_two_files_with_the_same_number(tmp_path: Path) -> None:
    d = write_migrations(tmp_path, {"0001_a.sql": "SELECT 1", "0001_b.sql": "SELECT 2"})
    with pytest.raises(MigrationError, match="share a number"):
        discover(d)


def test_pending_lists_only_new_migrations(empty_db_url: str, tmp_path: Path) -> None:
    migrate.apply(empty_db_url, out=io.StringIO())
    files = {m.path.name: m.sql for m in discover()}
    files["9999_later.sql"] = "CREATE TABLE later (id int)"
    with psycopg.connect(empty_db_url, row_factory=dict_row) as conn:
        assert [m.version for m in pending(conn, discover(write_migrations(tmp_path, files)))] == ["9999_later"]


def test_pending_on_a_database_never_migrated_lists_everything(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, row_factory=dict_row) as conn:
        assert [m.version for m in pending(conn)] == VERSIONS


def test_an_applied_migration_whose_file_was_edited_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    migrate.apply(empty_db_url, out=io.StringIO())
    first = discover()[0]
    edited = write_migrations(tmp_path, {first.path.name: first.sql + "\n-- edited afterwards\n"})
    with (
        psycopg.connect(empty_db_url, row_factory=dict_row) as conn,
        pytest.raises(MigrationError, match=f"migration {first.version} was edited after it was applied"),
    ):
        pending(conn, discover(edited))


def test_a_failing_migration_is_rolled_back_and_not_recorded(
    empty_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {m.path.name: m.sql for m in discover()}
    files["9998_half.sql"] = "CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;"
    d = write_migrations(tmp_path, files)
    real_discover: Callable[..., list[migrate.Migration]] = migrate.discover
    monkeypatch.setattr(migrate, "discover", lambda directory=d: real_discover(directory))

    with pytest.raises(psycopg.errors.UndefinedTable):
        migrate.apply(empty_db_url, out=io.StringIO())

    assert [v for v, _ in recorded(empty_db_url)] == VERSIONS  # the good ones before it stay applied
    assert "half_done" not in tables(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        assert migrate_lock_holders(conn) == 0


# --- the command line (the Procfile's release step) -------------------------------------------


def test_cli_check_exits_1_listing_pending_migrations_on_an_empty_database(empty_db_url: str) -> None:
    result = run_cli("--check", database_url=empty_db_url)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"pending {v}" for v in VERSIONS]
    assert tables(empty_db_url) == set()  # --check changes nothing


def test_cli_check_exits_0_once_migrated(empty_db_url: str) -> None:
    assert run_cli(database_url=empty_db_url).returncode == 0
    result = run_cli("--check", database_url=empty_db_url)
    assert (result.returncode, result.stdout) == (0, "")


def test_cli_check_exits_2_when_an_applied_migration_was_edited(empty_db_url: str) -> None:
    migrate.apply(empty_db_url, out=io.StringIO())
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("UPDATE agent_hub.schema_migrations SET checksum = 'not-the-file' WHERE version = %s", (VERSIONS[0],))
    result = run_cli("--check", database_url=empty_db_url)
    assert result.returncode == 2
    assert result.stderr.strip() == f"migrate: migration {VERSIONS[0]} was edited after it was applied"


def test_cli_refuses_to_apply_over_an_edited_migration(empty_db_url: str) -> None:
    migrate.apply(empty_db_url, out=io.StringIO())
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("UPDATE agent_hub.schema_migrations SET checksum = 'not-the-file' WHERE version = %s", (VERSIONS[0],))
    result = run_cli(database_url=empty_db_url)
    assert result.returncode == 2
    assert "was edited" in result.stderr


def test_cli_without_database_url_exits_2_with_one_clear_line() -> None:
    result = run_cli("--check", database_url=None)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("migrate: DATABASE_URL is not set")


def test_cli_with_an_unreachable_database_exits_2_with_one_clear_line() -> None:
    result = run_cli(database_url="postgresql://postgres@127.0.0.1:1/x")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("migrate: cannot reach the database")


def test_cli_prisma_creates_the_prisma_tables_once(empty_db_url: str) -> None:
    first = run_cli("--prisma", database_url=empty_db_url)
    assert first.returncode == 0, first.stderr
    assert "created the Prisma tables" in first.stdout
    assert tables(empty_db_url) >= PRISMA_TABLES
    assert {"invocation_outbox", "schema_migrations"} <= tables(empty_db_url, "agent_hub")

    # A second run must not recreate (or fail on) them: a row written in between survives.
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO "User" (id, "clerkId", name, email, "updatedAt") VALUES ('u1', 'c1', 'n', 'e', CURRENT_TIMESTAMP)"""
        )
    second = run_cli("--prisma", database_url=empty_db_url)
    assert second.returncode == 0, second.stderr
    assert "created the Prisma tables" not in second.stdout
    assert "migrations: up to date" in second.stdout
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute('SELECT count(*) FROM "User"').fetchone() == (1,)


def test_cli_prisma_on_a_database_prisma_already_owns_only_adds_our_tables(empty_db_url: str) -> None:
    # Production-like: Prisma's tables exist first (prisma migrate), then our release step runs.
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(migrate.PRISMA_SCHEMA.read_text(encoding="utf-8"))
    result = run_cli(database_url=empty_db_url)
    assert result.returncode == 0, result.stderr
    assert "created the Prisma tables" not in result.stdout
    assert {"invocation_outbox", "schema_migrations"} <= tables(empty_db_url, "agent_hub")
