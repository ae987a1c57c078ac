"""Named SQL queries, loaded from ``sql/queries/<area>/<name>.sql``.

Queries live in .sql files so a reader finds each one in one place; parameters
are always bound (psycopg ``%(name)s`` placeholders), never formatted in.
"""

from __future__ import annotations

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
    return path.read_text(encoding="utf-8")
