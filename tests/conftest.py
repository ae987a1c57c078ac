"""Shared fixtures: a real Postgres, a migrated template, a fresh database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from core.db import make_pool
from devstack.embedded_pg import EmbeddedPostgres
from tests import pg

_EMBEDDED = pytest.StashKey[EmbeddedPostgres]()


def pytest_configure(config: pytest.Config) -> None:
    """Without DATABASE_URL, start one embedded Postgres for the whole run, before any test process exists.

    Only the controller starts it (xdist workers have ``workerinput`` and inherit its URL through the
    environment, which the workers are spawned with after this hook); it lives in a fresh folder and is
    removed in ``pytest_unconfigure``, so every run, CI's included, takes the first-run path.
    """
    if hasattr(config, "workerinput") or pg.configured_url():
        return
    server = EmbeddedPostgres(prefix="agenthub-pgtest-", durable=False, max_connections=400).start()
    config.stash[_EMBEDDED] = server
    os.environ[pg.EMBEDDED_URL_ENV] = server.url


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(_EMBEDDED, None)
    if server is not None:
        os.environ.pop(pg.EMBEDDED_URL_ENV, None)
        server.close()


def pytest_report_header(config: pytest.Config) -> str:
    server = config.stash.get(_EMBEDDED, None)
    if server is not None:
        return f"postgres: embedded, this run's own ({server.root}), removed at the end"
    return "postgres: DATABASE_URL"


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
