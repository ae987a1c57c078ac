"""Shared fixtures: a real Postgres, a migrated template, a fresh database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from core.db import make_pool
from tests import pg


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    return pg.server_url()


@pytest.fixture(scope="session")
def template_name(pg_server_url: str) -> Iterator[str]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"agenthub_tmpl_{worker}_{os.getpid()}"
    pg.create_template(pg_server_url, name)
    yield name
    pg.drop(pg_server_url, name)


@pytest.fixture
def db_url(pg_server_url: str, template_name: str) -> Iterator[str]:
    """A fresh database with the Prisma tables and our migrations, dropped after the test."""
    name, url = pg.create_from_template(pg_server_url, template_name)
    yield url
    pg.drop(pg_server_url, name)


@pytest.fixture
def empty_db_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database (for migration tests)."""
    name, url = pg.create_from_template(pg_server_url, "template0", prefix="e")
    yield url
    pg.drop(pg_server_url, name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        yield c


@pytest.fixture(scope="module")
def module_db_url(pg_server_url: str, template_name: str) -> Iterator[str]:
    """A fresh migrated database shared by one test module (for suites that start real processes)."""
    name, url = pg.create_from_template(pg_server_url, template_name, prefix="m")
    yield url
    pg.drop(pg_server_url, name)


@pytest.fixture
def pool(db_url: str) -> Iterator[ConnectionPool]:
    """A small pool on the test's database, configured like the services' pools."""
    p = make_pool(db_url, min_size=1, max_size=4, timeout_s=5, statement_timeout_ms=10_000, application_name="test")
    p.open(wait=True)
    yield p
    p.close()
