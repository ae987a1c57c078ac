"""Where the tests' Postgres comes from, and per-test databases copied from a template.

``DATABASE_URL`` set: that server (CI: 127.0.0.1:5432, database ``test``).
Unset: an embedded Postgres from the ``pgserver`` pip package, shared by the
test processes of one machine and stopped when the last one exits.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from core import migrate


def with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def server_url() -> str:
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        return url
    import pgserver  # embedded Postgres; only imported when needed

    data = Path(tempfile.gettempdir()) / f"agenthub-pgtest-{os.getuid()}"
    server = pgserver.get_server(data, cleanup_mode="stop")
    # Keep a reference so pgserver does not stop it while this process runs.
    globals()["_embedded"] = server
    return server.get_uri()


def admin(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def create_template(url: str, name: str) -> str:
    """A database with the Prisma tables and our migrations, used as a template."""
    with admin(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    tmpl_url = with_dbname(url, name)
    migrate.apply(tmpl_url, prisma=True, out=open(os.devnull, "w"))  # noqa: SIM115
    return tmpl_url


def create_from_template(url: str, template: str, prefix: str = "t") -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin(url) as conn:
        # PG 15+ defaults to WAL_LOG, which writes the whole template through the WAL: FILE_COPY
        # (one checkpoint + a file copy) makes a per-test database about ten times quicker.
        strategy = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}')
    return name, with_dbname(url, name)


def drop(url: str, name: str) -> None:
    with admin(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
