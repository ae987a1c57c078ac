"""Stage 7: two figures the test suite used to assert and now only the bench reports.

- The claim's plan behind a long history of finished rows (``EXPLAIN ANALYZE``, rolled back): which scans
  of the outbox it uses and how many rows they threw away. Before migration 0004 it walked every
  finished row from the first one ever queued (docs/performance.md, change 5).
- ``python -m dispatcher stats`` over an hour behind a month of history: the rows it reads (the window's).
- How long building one run's Piston files takes when a session's chat history must be windowed
  (20,000 messages into Piston's 100 kB body), and for an ordinary history.

Speed is a figure to watch here, not a pass/fail line: a loaded machine would turn a timed assertion in
a test into a coin toss.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg

from bench import seed
from core.sqlfiles import query
from dispatcher.bundle import AgentSource, build_files

OWNER = "bench-plan"


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _nodes(child))]


def claim_plan(url: str, *, finished: int, open_rows: int, batch: int = 10) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of one claim of ``batch`` behind ``finished`` finished rows and ``open_rows``
    queued ones; the claim really runs and is rolled back."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE agent_hub.invocation_outbox CASCADE")
        conn.execute(
            "INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, session_id, user_id, prompt, status, attempts, "
            "started_at, finished_at) SELECT 'plan-history-' || g, 'a', 'plan-history-' || g, 'u', 'p', 'succeeded', "
            "1, now(), now() FROM generate_series(1, %s) g", (finished,))
        user_id, agent_id = seed.agent(conn)
        seed.outbox_rows(conn, seed.invocations(conn, user_id, agent_id, open_rows, tag="plan"))
        conn.execute("VACUUM ANALYZE agent_hub.invocation_outbox")
        params = {"owner": OWNER, "batch": batch, "lease_s": 30, "running": [], "notify": False}
        with conn.transaction():
            row = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query("dispatcher/claim"), params).fetchone()
            raise psycopg.Rollback()
    assert row is not None
    plan = row[0][0]
    nodes = _nodes(plan["Plan"])
    scans = [
        {"node": n["Node Type"], "index": n.get("Index Name"), "index_cond": n.get("Index Cond"),
         "rows": n.get("Actual Rows"), "loops": n.get("Actual Loops"),
         "rows_removed_by_filter": n.get("Rows Removed by Filter", 0)}
        for n in nodes if "Scan" in n["Node Type"]
        # a Bitmap Index Scan names only its index
        and (n.get("Relation Name") == "invocation_outbox" or str(n.get("Index Name")).startswith("invocation_outbox"))
    ]
    return {
        "finished_rows": finished, "open_rows": open_rows, "batch": batch,
        "claimed": plan["Plan"].get("Actual Rows"),
        "execution_ms": round(plan["Execution Time"], 3), "planning_ms": round(plan["Planning Time"], 3),
        "scans": scans,
        # The figure that matters: finished rows the claim read and threw away (was ~all of them before 0004).
        "max_rows_removed_by_filter": max(n.get("Rows Removed by Filter", 0) for n in nodes),
        "shared_blocks": sum(plan["Plan"].get(k, 0) for k in ("Shared Hit Blocks", "Shared Read Blocks")),
    }


def stats_plan(url: str, *, history: int, window: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE of ``python -m dispatcher stats --agent`` over the last hour, behind ``history`` rows a
    month old: the rows it reads should follow the window (``window`` rows), not the history."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE agent_hub.invocation_outbox CASCADE")
        conn.execute(
            "INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, user_id, prompt, status, attempts, created_at, "
            "started_at, finished_at) SELECT 'stats-' || g, 'agent-' || (g %% 50), 'u', 'p', 'succeeded', 1, "
            "now() - interval '30 days' + g * interval '1 millisecond', now() - interval '30 days', "
            "now() - interval '30 days' FROM generate_series(1, %s) g", (history,))
        conn.execute(
            "INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, user_id, prompt, status, attempts, started_at, "
            "finished_at) SELECT 'stats-new-' || g, 'agent-1', 'u', 'p', 'succeeded', 1, now(), now() "
            "FROM generate_series(1, %s) g", (window,))
        conn.execute("VACUUM ANALYZE agent_hub.invocation_outbox")
        params = {"since": None, "agent_id": "agent-1", "user_id": None, "top": 3}
        row = conn.execute("SELECT now() - interval '1 hour' AS since").fetchone()
        assert row is not None
        params["since"] = row[0]
        plan_row = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query("stats/agents"), params).fetchone()
    assert plan_row is not None
    plan = plan_row[0][0]
    nodes = _nodes(plan["Plan"])
    scans = [n for n in nodes if "Scan" in n["Node Type"] and (
        n.get("Relation Name") == "invocation_outbox" or str(n.get("Index Name")).startswith("invocation_outbox"))]
    return {"history_rows": history, "window_rows": window, "execution_ms": round(plan["Execution Time"], 3),
            "outbox_rows_read": sum(int(n.get("Actual Rows", 0)) * int(n.get("Actual Loops", 1))
                                    + int(n.get("Rows Removed by Filter", 0)) for n in scans),
            "scans": sorted({f"{n['Node Type']}" + (f" on {n['Index Name']}" if n.get("Index Name") else "")
                             for n in scans})}


def _context(messages: int) -> dict[str, Any]:
    history = [{"role": "user" if i % 2 else "agent", "content": f"{i}:" + "x" * 50,
                "timestamp": "2024-01-01T00:00:00.000Z"} for i in range(messages)]
    return {"version": 1, "nonce": "bench", "transport": "ws", "agent": {"id": "a", "name": "A", "version": "1"},
            "job_id": "j", "session_id": "s", "user_id": "u", "prompt": "hi", "env_vars": {}, "user_vars": {},
            "chat_history": history, "history_cut": 0}


def bundle_build(*, messages: int, repeats: int, max_body_bytes: int = 100_000) -> dict[str, Any]:
    """build_files() for a history of ``messages`` 50-character messages, ``repeats`` times (CPU only)."""
    context = _context(messages)
    sources = [AgentSource("main.py", "import hub\nhub.send_message('hi')\n")]
    times: list[float] = []
    kept = 0
    for _ in range(repeats):
        started = time.perf_counter()
        built = build_files(context, sources, max_body_bytes=max_body_bytes)
        times.append(time.perf_counter() - started)
        kept = built.history_kept
    return {"messages": messages, "kept": kept, "max_body_bytes": max_body_bytes, "repeats": repeats,
            "min_ms": round(min(times) * 1000, 2), "median_ms": round(statistics.median(times) * 1000, 2),
            "max_ms": round(max(times) * 1000, 2)}


def run(url: str, quick: bool) -> dict[str, Any]:
    finished = 20_000 if quick else 200_000
    return {
        "claim_plan": claim_plan(url, finished=finished, open_rows=300),
        "stats_plan": stats_plan(url, history=finished, window=500),
        "bundle_windowed": bundle_build(messages=20_000, repeats=3 if quick else 10),
        "bundle_ordinary": bundle_build(messages=50, repeats=20 if quick else 200),
    }
