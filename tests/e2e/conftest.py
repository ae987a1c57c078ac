"""Fixtures shared by the end-to-end suites (each module defines its own ``stack``)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.stack import Stack


@pytest.fixture
def hub_conn(stack: Stack) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the module's stack's database, as the hub's side of the tables."""
    with stack.connect() as c:
        yield c
