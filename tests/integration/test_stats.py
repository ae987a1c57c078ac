"""Per-agent statistics on real Postgres: the window, the filters, the figures from each row's result, the
failure reasons. (What it reads behind a long history is a bench figure: bench/micro.py, stats_plan.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg

from dispatcher.stats_cli import collect

INSERT = (
    "INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, session_id, user_id, prompt, status, attempts, "
    "created_at, started_at, finished_at, last_error, result, parent_id, depth) "
    "VALUES (%(job)s, %(agent)s, NULL, %(user)s, 'p', %(status)s::agent_hub.invocation_status, %(attempts)s, "
    "%(created)s, %(started)s, %(finished)s, %(error)s, %(result)s, %(parent)s, %(depth)s) RETURNING id"
)


def row(conn: psycopg.Connection, n: int, *, agent: str = "a1", user: str = "u1", status: str = "succeeded",
        run_ms: int = 100, attempts: int = 1, age_s: float = 60, error: str | None = None,
        llm: dict | None = None, parent: int | None = None) -> int:
    created = datetime.now(UTC) - timedelta(seconds=age_s)
    started = created + timedelta(milliseconds=5)
    finished = None if status in ("pending", "running") else started + timedelta(milliseconds=run_ms)
    result = json.dumps({"llm": llm}) if llm else None
    params = {"job": f"job-{agent}-{n}", "agent": agent, "user": user, "status": status, "attempts": attempts,
              "created": created, "started": started if status != "pending" else None, "finished": finished,
              "error": error, "result": result, "parent": parent, "depth": 0 if parent is None else 1}
    out = conn.execute(INSERT, params).fetchone()
    return int(out["id"])


def since(hours: float = 1) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def test_figures_per_agent_match_the_rows(conn: psycopg.Connection) -> None:
    for i, ms in enumerate((100, 200, 300, 400)):
        row(conn, i, run_ms=ms, attempts=1 + (i == 3), llm={"calls": 2, "prompt_tokens": 10, "output_tokens": 5})
    row(conn, 10, status="failed", error="agent exited with code 3\ntraceback...")
    row(conn, 11, status="failed", error="agent exited with code 3\nother detail")
    row(conn, 12, status="failed", error="timed out after 3 s")
    row(conn, 13, status="cancelled")
    row(conn, 14, status="pending")
    parent = row(conn, 15)
    row(conn, 16, parent=parent)
    row(conn, 20, agent="a2")

    (a1, a2) = collect(conn, since=since(), agent_id=None, user_id=None)
    assert a1["agent_id"] == "a1" and a2["agent_id"] == "a2"
    assert (a1["runs"], a1["succeeded"], a1["failed"], a1["cancelled"], a1["open"], a1["as_child"]) == (11, 6, 3, 1, 1, 1)
    assert a1["success_rate"] == round(6 / 9, 4)
    assert a1["attempts"] == 12 and a1["retried"] == 1
    assert (a1["llm_calls"], a1["prompt_tokens"], a1["output_tokens"]) == (8, 40, 20)
    # succeeded run times: 100, 200, 300, 400, 100, 100 ms
    assert a1["p50_ms"] == 150.0
    assert 340.0 <= a1["p95_ms"] <= 400.0
    assert a1["top_failures"] == [{"reason": "agent exited with code 3", "count": 2},
                                  {"reason": "timed out after 3 s", "count": 1}]
    assert a2["runs"] == 1 and a2["top_failures"] == []


def test_the_window_and_the_filters_leave_out_other_rows(conn: psycopg.Connection) -> None:
    row(conn, 1, age_s=60)
    row(conn, 2, age_s=7200)
    row(conn, 3, user="u2")
    row(conn, 4, agent="a2")
    (a1,) = collect(conn, since=since(1), agent_id="a1", user_id="u1")
    assert a1["runs"] == 1
    assert [a["runs"] for a in collect(conn, since=since(3), agent_id="a1", user_id=None)] == [3]
    assert collect(conn, since=since(1), agent_id="nobody", user_id=None) == []
