"""Prisma's own migration engine finds nothing to change between our database and the hub's schema.prisma.

Next.js owns the database's Prisma schema: `prisma migrate diff`, `db push` and `migrate dev` compare
the database's ``public`` schema with schema.prisma and drop, or reset, whatever is not in it. So the
database our migrations leave must be, to Prisma, exactly the contract's schema (issue 19). The diff is
made by Prisma 7.10.0's schema engine (tests/prisma_engine_diff.py), not by a parser of ours.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from core import migrate
from tests import prisma_engine_diff
from tests.legacy_layout import install_public_layout
from tests.prisma_engine_diff import Diff, contract_schema, for_prisma7, migrate_diff


@pytest.fixture(scope="session")
def prisma_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The engine installed from the lockfile into this run's own folder (fails, never skips, when it cannot be)."""
    try:
        return prisma_engine_diff.install(tmp_path_factory.mktemp("prisma_engine"))
    except prisma_engine_diff.PrismaEngineUnavailable as exc:
        reason = str(exc)
    pytest.fail(reason, pytrace=False)


@pytest.fixture
def prisma_only_db_url(empty_db_url: str) -> Iterator[str]:
    """A fresh database holding only sql/prisma/schema.sql (the Prisma tables, none of ours)."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(migrate.PRISMA_SCHEMA.read_text(encoding="utf-8"))
    yield empty_db_url


def execute(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def explain(diff: Diff) -> str:
    return f"Prisma's migrate diff (database -> {contract_schema()}) would run:\n{diff.sql}"


def statements(diff: Diff) -> list[str]:
    """The script's statements, whitespace collapsed, comments dropped."""
    body = "\n".join(line for line in diff.sql.splitlines() if not line.startswith("--"))
    return [" ".join(s.split()) for s in body.split(";") if s.strip()]


def test_prisma_finds_nothing_to_change_in_the_migrated_database(prisma_engine: Path, db_url: str) -> None:
    diff = migrate_diff(prisma_engine, db_url, contract_schema())
    assert diff.empty, explain(diff)


def test_prisma_finds_nothing_to_change_after_an_upgrade_from_the_public_layout(
    prisma_engine: Path, empty_db_url: str
) -> None:
    install_public_layout(empty_db_url)
    before = migrate_diff(prisma_engine, empty_db_url, contract_schema())
    assert 'DROP TABLE "invocation_outbox"' in before.sql  # the layout the upgrade starts from: drift to Prisma
    migrate.apply(empty_db_url, out=open(os.devnull, "w"))  # noqa: SIM115
    diff = migrate_diff(prisma_engine, empty_db_url, contract_schema())
    assert diff.empty, explain(diff)


# --- the harness sees what it must (so the test above cannot pass by seeing nothing) -----------------


def test_prisma_finds_our_schema_sql_to_be_exactly_the_contract(prisma_engine: Path, prisma_only_db_url: str) -> None:
    diff = migrate_diff(prisma_engine, prisma_only_db_url, contract_schema())
    assert diff.empty, explain(diff)
    assert diff.sql.strip() == "-- This is an empty migration."


def test_prisma_wants_to_add_back_a_prisma_column_missing_from_the_database(prisma_engine: Path, prisma_only_db_url: str) -> None:
    execute(prisma_only_db_url, 'ALTER TABLE "Job" DROP COLUMN "statusMessage"')
    diff = migrate_diff(prisma_engine, prisma_only_db_url, contract_schema())
    assert diff.exit_code == 2
    assert statements(diff) == ['ALTER TABLE "Job" ADD COLUMN "statusMessage" TEXT']


def test_prisma_wants_to_drop_a_table_and_an_enum_of_ours_in_public(prisma_engine: Path, prisma_only_db_url: str) -> None:
    # The failure mode of issue 19: anything in public that schema.prisma does not declare is Prisma's to drop.
    execute(
        prisma_only_db_url,
        "CREATE TYPE ours_status AS ENUM ('a', 'b'); CREATE TABLE ours (id BIGINT PRIMARY KEY, s ours_status)",
    )
    diff = migrate_diff(prisma_engine, prisma_only_db_url, contract_schema())
    assert diff.exit_code == 2
    assert statements(diff) == ['DROP TABLE "ours"', 'DROP TYPE "ours_status"']


def test_prisma_ignores_tables_enums_and_triggers_in_a_schema_of_their_own(prisma_engine: Path, prisma_only_db_url: str) -> None:
    execute(
        prisma_only_db_url,
        """
        CREATE SCHEMA agent_hub_probe;
        CREATE TYPE agent_hub_probe.status AS ENUM ('a', 'b');
        CREATE TABLE agent_hub_probe.outbox (id BIGSERIAL PRIMARY KEY, s agent_hub_probe.status NOT NULL,
                                             attempts INT NOT NULL DEFAULT 0 CHECK (attempts >= 0));
        CREATE TABLE agent_hub_probe.event (id BIGSERIAL PRIMARY KEY,
                                            outbox_id BIGINT NOT NULL REFERENCES agent_hub_probe.outbox (id));
        CREATE FUNCTION agent_hub_probe.note() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN INSERT INTO agent_hub_probe.event (outbox_id) VALUES (NEW.id); RETURN NEW; END $$;
        CREATE TRIGGER note AFTER INSERT ON agent_hub_probe.outbox FOR EACH ROW EXECUTE FUNCTION agent_hub_probe.note();
        """,
    )
    diff = migrate_diff(prisma_engine, prisma_only_db_url, contract_schema())
    assert diff.empty, explain(diff)


def test_the_contract_is_shared_beside_the_repository_else_our_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prisma_engine_diff, "REPO", tmp_path / "repo")
    shared = tmp_path / "shared" / "contract" / "schema.prisma"
    shared.parent.mkdir(parents=True)
    shared.write_text("// the hub's\n", encoding="utf-8")
    assert contract_schema() == shared
    shared.unlink()
    assert contract_schema() == prisma_engine_diff.LOCAL_SCHEMA


def test_for_prisma7_leaves_out_only_the_datasource_urls() -> None:
    schema = (
        'generator client {\n  provider = "prisma-client-js"\n  url = "not a datasource: kept"\n}\n\n'
        'datasource db {\n  provider  = "postgresql"\n  url       = env("DATABASE_URL")\n'
        '  directUrl = env("DIRECT_URL")\n}\n\nmodel A {\n  id  String @id\n  url String\n}\n'
    )
    expected = schema.replace('  url       = env("DATABASE_URL")\n', "").replace('  directUrl = env("DIRECT_URL")\n', "")
    assert for_prisma7(schema) == expected
