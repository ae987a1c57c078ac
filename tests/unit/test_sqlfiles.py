"""Named SQL files: loaded by name, shared fragments included once, no escape from sql/queries."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import sqlfiles
from core.sqlfiles import query


def test_the_claims_share_one_due_rule_included_verbatim() -> None:
    rule = sqlfiles.source("dispatcher/claim_due_rule").rstrip("\n")
    for name in ("dispatcher/claim", "dispatcher/claim_fair"):
        text = sqlfiles.source(name)
        assert rule in text and "--@include" not in text
        assert text.count("o.lease_expires_at < now()") == 1


def test_an_include_of_a_missing_file_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "q.sql").write_text("SELECT 1\n--@include a/missing\n")
    monkeypatch.setattr(sqlfiles, "QUERIES_DIR", tmp_path)
    sqlfiles.query.cache_clear()
    try:
        with pytest.raises(FileNotFoundError):
            query("a/q")
    finally:
        sqlfiles.query.cache_clear()


def test_a_query_name_cannot_leave_sql_queries() -> None:
    with pytest.raises(ValueError, match="escapes sql/queries"):
        query("../migrations/0001_invocation_outbox")


def test_queries_go_out_without_their_comment_lines_but_with_their_name_on_top() -> None:
    text = query("dispatcher/claim")
    assert text.startswith("-- dispatcher/claim\n")
    assert [line for line in text.splitlines()[1:] if line.lstrip().startswith("--")] == []
    assert len(text.encode()) < 4096  # psycopg caches the conversion of a query only up to 4 kB


def test_comment_lines_go_and_quoted_dashes_and_trailing_comments_stay() -> None:
    sql = ("-- header\nSELECT 'it''s\n-- not a comment' AS a, -- trailing, it's kept\n"
           '  "odd--name" AS b\n\n   -- indented comment\nFROM t\n')
    assert sqlfiles.without_comment_lines(sql) == (
        "SELECT 'it''s\n-- not a comment' AS a, -- trailing, it's kept\n  \"odd--name\" AS b\nFROM t\n")
