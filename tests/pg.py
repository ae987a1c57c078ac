"""Where the tests' Postgres comes from, and per-test databases copied from a template.

``DATABASE_URL`` set: that server (CI: 127.0.0.1:5432, database ``test``).
Unset: an embedded Postgres in a fresh folder of this run's own, started once by the
pytest controller before the test processes need it (``tests/conftest.py``), handed to
them in ``EMBEDDED_URL_ENV`` and removed when the run ends.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg

from core import migrate


def with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


# Set by the run's controller for its test processes; never by hand.
EMBEDDED_URL_ENV = "AGENTHUB_TEST_EMBEDDED_PG_URL"


def configured_url() -> str:
    """The server named by the environment: ``DATABASE_URL``, else this run's embedded one, else ''."""
    return os.environ.get("DATABASE_URL", "").strip() or os.environ.get(EMBEDDED_URL_ENV, "").strip()


def server_url() -> str:
    url = configured_url()
    if not url:
        raise RuntimeError("no test Postgres: DATABASE_URL is unset and tests/conftest.py started none")
    return url


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
