"""Installations as versions before the move into ``agent_hub`` left them: every object of ours in ``public``.

``install_public_layout`` does what ``core.migrate`` did then, with the same migration files: the Prisma
tables, a ``public.schema_migrations`` ledger, and each file applied with the default search_path (so into
``public``) and recorded with its checksum.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

from core import migrate

# The migrations that existed before the move (0005 is the move's own).
LEGACY_VERSIONS = ("0001_invocation_outbox", "0002_child_invocations", "0003_outbox_events", "0004_claim_open_index")


def install_public_layout(url: str, versions: tuple[str, ...] = LEGACY_VERSIONS) -> None:
    files = {m.version: m for m in migrate.discover()}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(migrate.PRISMA_SCHEMA.read_text(encoding="utf-8"))
        conn.execute("CREATE TABLE public.schema_migrations (version TEXT PRIMARY KEY, checksum TEXT NOT NULL, "
                     "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for version in versions:
            m = files[version]
            with conn.transaction():
                conn.execute(m.sql)
                conn.execute("INSERT INTO public.schema_migrations (version, checksum) VALUES (%s, %s)", (m.version, m.checksum))


def public_objects(url: str) -> set[tuple[str, str]]:
    """Every object in ``public`` by kind and name: relations (tables, indexes, sequences, views), types,
    functions, triggers."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        rows = conn.execute(
            """
            SELECT c.relkind::text AS kind, c.relname AS name
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'
            UNION ALL
            SELECT 'type', t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname = 'public' AND t.typelem = 0 AND t.typrelid = 0
            UNION ALL
            SELECT 'function', p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public'
            UNION ALL
            SELECT 'trigger', tg.tgname FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND NOT tg.tgisinternal
            """
        ).fetchall()
    return {(r["kind"], r["name"]) for r in rows}
