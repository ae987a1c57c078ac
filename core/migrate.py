"""Apply this service's SQL migrations (the Procfile's ``release``).

``python -m core.migrate``            apply sql/migrations/*.sql (production: only our tables)
``python -m core.migrate --prisma``   also create the Prisma tables if absent (tests, local runs)
``python -m core.migrate --check``    exit 1 if a migration is pending or was edited

Idempotent and safe to run from several processes at once: a session advisory
lock serialises runners, each file is applied in its own transaction and
recorded with its checksum, and an edited, already-applied file is an error.

Every object of ours lives in the Postgres schema ``agent_hub`` (``SCHEMA``), out of
Prisma's sight: migration files name their objects without a schema and are applied
with ``agent_hub`` first on the search_path; the ledger is ``agent_hub.schema_migrations``.
An installation from before that layout (our objects and ledger in ``public``) is moved
into ``agent_hub`` in place, in one transaction, before anything else is applied.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import psycopg

from core.config import ConfigError, database_url
from core.db import Conn, connect
from core.sqlfiles import SQL_ROOT, query

MIGRATIONS_DIR = SQL_ROOT / "migrations"
PRISMA_SCHEMA = SQL_ROOT / "prisma" / "schema.sql"
SCHEMA = "agent_hub"  # named in sql/queries/ and sql/queries/migrate/*.sql too
# Arbitrary constant shared by all runners of this service's migrations.
ADVISORY_LOCK_KEY = 0x4147_4855_4D49  # "AGHUMI"


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        prefix = path.name.split("_", 1)[0]
        if not prefix.isdigit():
            raise MigrationError(f"migration file must start with a number: {path.name}")
        found.append(Migration(version=path.stem, path=path, sql=path.read_text(encoding="utf-8")))
    versions = [m.version.split("_", 1)[0] for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a number")
    return found


def _applied(conn: Conn, name: str = "migrate/applied") -> dict[str, str]:
    rows = conn.execute(query(name)).fetchall()
    return {r["version"]: r["checksum"] for r in rows}


def _unapplied(applied: dict[str, str], migrations: list[Migration]) -> list[Migration]:
    out = []
    for m in migrations:
        if m.version in applied:
            if applied[m.version] != m.checksum:
                raise MigrationError(f"migration {m.version} was edited after it was applied")
        else:
            out.append(m)
    return out


def pending(conn: Conn, migrations: list[Migration] | None = None) -> list[Migration]:
    """Migrations not yet applied; raises if an applied one was edited."""
    migrations = discover() if migrations is None else migrations
    layout = conn.execute(query("migrate/layout")).fetchone()
    applied = _applied(conn) if layout and layout["ledger_in_schema"] else {}
    return _unapplied(applied, migrations)


def relocate_legacy_layout(conn: Conn, migrations: list[Migration], out: TextIO) -> bool:
    """Move an installation from before the ``agent_hub`` schema out of ``public``; True when it did.

    Only a ``public.schema_migrations`` that is ours is moved: our columns, and every version in it one of
    our files with its checksum (someone else's ledger of the same name is left alone). Runs under the
    advisory lock, in one transaction: a concurrent runner waits, then finds the new layout.
    """
    layout = conn.execute(query("migrate/layout")).fetchone()
    if not layout or not layout["ledger_in_public"]:
        return False
    legacy = _applied(conn, "migrate/legacy_applied")
    ours = {m.version for m in migrations}
    if not legacy or not set(legacy) <= ours:
        return False  # not our ledger: same name, other owner
    if layout["ledger_in_schema"]:
        raise MigrationError(
            f"this service's migrations ledger is in both public and {SCHEMA}: a version from before the move "
            f"into {SCHEMA} ran its migrations after it; see docs/runbook.md \"Our objects outside agent_hub\"")
    _unapplied(legacy, migrations)  # an edited file is refused before anything moves
    with conn.transaction():
        conn.execute(query("migrate/relocate"))
    print(f"moved this service's objects from public into {SCHEMA} ({len(legacy)} migration(s) recorded)", file=out)
    return True


def prisma_tables_exist(conn: Conn) -> bool:
    # The hub's tables resolve through the connection's search_path (Prisma's schema, public by default).
    row = conn.execute("""SELECT to_regclass('"Job"') IS NOT NULL AS e""").fetchone()
    return bool(row and row["e"])


def apply(url: str, *, prisma: bool = False, out: TextIO = sys.stdout) -> list[str]:
    """Apply pending migrations; returns the versions applied by this call."""
    done: list[str] = []
    with connect(url, autocommit=True, application_name="agent-hub-migrate") as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            if prisma and not prisma_tables_exist(conn):
                with conn.transaction():
                    conn.execute(PRISMA_SCHEMA.read_text(encoding="utf-8"))
                print("created the Prisma tables (local/test only)", file=out)
            migrations = discover()
            relocate_legacy_layout(conn, migrations, out)
            conn.execute(query("migrate/ledger"))
            for m in pending(conn, migrations):
                with conn.transaction():
                    conn.execute(query("migrate/in_schema"))
                    conn.execute(m.sql)
                    conn.execute(query("migrate/record"), {"version": m.version, "checksum": m.checksum})
                done.append(m.version)
                print(f"applied {m.version}", file=out)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    if not done:
        print("migrations: up to date", file=out)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("--prisma", action="store_true", help="also create the Prisma tables if absent (never in production)")
    parser.add_argument("--check", action="store_true", help="exit 1 if any migration is pending")
    args = parser.parse_args(argv)
    try:
        url = database_url()
        if args.check:
            with connect(url, autocommit=True) as conn:
                todo = pending(conn)
            for m in todo:
                print(f"pending {m.version}")
            return 1 if todo else 0
        apply(url, prisma=args.prisma)
    except (ConfigError, MigrationError) as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"migrate: cannot reach the database: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        # The failing migration's transaction was rolled back and nothing was recorded.
        print(f"migrate: a migration failed: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
