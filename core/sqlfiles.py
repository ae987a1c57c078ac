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
    """Return the text of ``sql/queries/<name>.sql`` (``name`` like ``ingress/lookup``), includes resolved,
    as sent to Postgres: its comment lines dropped and ``-- <name>`` on top (pg_stat_activity shows which).

    Why drop them: psycopg re-parses a query text longer than 4 kB for every execute (its cache of
    converted queries stops there), and encodes and hashes the whole text each time; the comments were
    most of the bytes (docs/performance.md, session 6)."""
    return f"-- {name}\n" + without_comment_lines(source(name))


@cache
def source(name: str) -> str:
    """The file's text with its includes resolved, comments and all."""
    path = (QUERIES_DIR / f"{name}.sql").resolve()
    if QUERIES_DIR not in path.parents:
        raise ValueError(f"query name escapes sql/queries: {name!r}")
    text = path.read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda m: _included(m.group(1), name), text)


_INCLUDE = re.compile(r"^[ \t]*--@include[ \t]+(\S+)[ \t]*$", re.MULTILINE)


def _included(name: str, into: str) -> str:
    if name == into:
        raise ValueError(f"{into} includes itself")
    return source(name).rstrip("\n")


def without_comment_lines(text: str) -> str:
    """``text`` without the lines that hold only a ``--`` comment (and blank lines); a comment after code
    stays. Quoted text ('…' literals, "…" identifiers) is never taken for a comment."""
    kept: list[str] = []
    quote = ""  # the quote character of a literal or identifier still open at the end of a line
    for line in text.splitlines():
        if not quote and (not line.strip() or line.lstrip().startswith("--")):
            continue
        kept.append(line)
        i = 0
        while i < len(line):
            ch = line[i]
            if quote:
                if ch == quote:
                    quote = ""  # a doubled quote ('') closes and reopens: the same in the end
            elif ch in ("'", '"'):
                quote = ch
            elif line.startswith("--", i):
                break  # the rest of the line is a comment: its quotes open nothing
            i += 1
    return "\n".join(kept) + "\n"
