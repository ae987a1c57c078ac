"""Apply this service's SQL migrations (the Procfile's ``release``).

``python -m core.migrate``            apply sql/migrations/*.sql (production: only our tables)
``python -m core.migrate --prisma``   also create the Prisma tables if absent (tests, local runs)
``python -m core.migrate --check``    exit 1 if a migration is pending or was edited

Idempotent and safe to run from several processes at once: a session advisory
lock serialises runners, each file is applied in its own transaction and
recorded with its checksum, and an edited, already-applied file is an error.
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
from core.sqlfiles import SQL_ROOT

MIGRATIONS_DIR = SQL_ROOT / "migrations"
PRISMA_SCHEMA = SQL_ROOT / "prisma" / "schema.sql"
# Arbitrary constant shared by all runners of this service's migrations.
ADVISORY_LOCK_KEY = 0x4147_4855_4D49  # "AGHUMI"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


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


def _applied(conn: Conn) -> dict[str, str]:
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {r["version"]: r["checksum"] for r in rows}


def pending(conn: Conn, migrations: list[Migration] | None = None) -> list[Migration]:
    """Migrations not yet applied; raises if an applied one was edited."""
    migrations = discover() if migrations is None else migrations
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS e").fetchone()
    applied = _applied(conn) if exists and exists["e"] else {}
    out = []
    for m in migrations:
        if m.version in applied:
            if applied[m.version] != m.checksum:
                raise MigrationError(f"migration {m.version} was edited after it was applied")
        else:
            out.append(m)
    return out


def prisma_tables_exist(conn: Conn) -> bool:
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
            conn.execute(_CREATE_TABLE)
            for m in pending(conn):
                with conn.transaction():
                    conn.execute(m.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                        (m.version, m.checksum),
                    )
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
