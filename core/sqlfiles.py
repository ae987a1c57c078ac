"""Named SQL queries, loaded from ``sql/queries/<area>/<name>.sql``.

Queries live in .sql files so a reader finds each one in one place; parameters
are always bound (psycopg ``%(name)s`` placeholders), never formatted in.

A line ``--@include <area>/<name>`` is replaced by that file's text (comments and all), so a rule
two queries share (the claim's "due" rule) is written once. Static text only: never a parameter.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SQL_ROOT = Path(__file__).resolve().parent.parent / "sql"
QUERIES_DIR = SQL_ROOT / "queries"


@cache
def query(name: str) -> str:
    """Return the text of ``sql/queries/<name>.sql`` (``name`` like ``ingress/lookup``)."""
    path = (QUERIES_DIR / f"{name}.sql").resolve()
    if QUERIES_DIR not in path.parents:
        raise ValueError(f"query name escapes sql/queries: {name!r}")
    text = path.read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda m: _included(m.group(1), name), text)


_INCLUDE = re.compile(r"^[ \t]*--@include[ \t]+(\S+)[ \t]*$", re.MULTILINE)


def _included(name: str, into: str) -> str:
    if name == into:
        raise ValueError(f"{into} includes itself")
    return query(name).rstrip("\n")
