"""``python -m dispatcher stats [--agent ID] [--user ID] [--since 24h] [--json]``: how each agent is doing.

Per agent, over the invocations queued in the window: runs, outcomes, success rate, run time p50/p95,
attempts, LLM calls and tokens, and the most frequent failure reasons (sql/queries/stats/). Read-only.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from core.db import Conn
from core.sqlfiles import query
from dispatcher.ops import parse_duration

EXIT_OK = 0
COMMAND = "stats"
TOP_REASONS = 3


def add_commands(sub: Any) -> None:
    p = sub.add_parser(COMMAND, help="per-agent statistics: runs, success rate, run time, attempts, LLM use")
    p.add_argument("--agent", metavar="AGENT_ID", help="only this agent")
    p.add_argument("--user", metavar="USER_ID", help="only this user's invocations")
    p.add_argument("--since", type=parse_duration, default=86400.0, metavar="AGE",
                   help="invocations queued within this long ago (default 24h; e.g. 30m, 7d)")
    p.add_argument("--json", action="store_true")


def _rate(succeeded: int, failed: int) -> float | None:
    """Success rate of the runs that ended on their own (cancelled and open runs left out)."""
    ended = succeeded + failed
    return round(succeeded / ended, 4) if ended else None


def collect(conn: Conn, *, since: datetime, agent_id: str | None, user_id: str | None) -> list[dict[str, Any]]:
    params = {"since": since, "agent_id": agent_id, "user_id": user_id, "top": TOP_REASONS}
    reasons: dict[str, list[dict[str, Any]]] = {}
    for r in conn.execute(query("stats/failures"), params).fetchall():
        reasons.setdefault(r["agent_id"], []).append({"reason": r["reason"], "count": int(r["n"])})
    agents = []
    for r in conn.execute(query("stats/agents"), params).fetchall():
        succeeded, failed = int(r["succeeded"]), int(r["failed"])
        agents.append({
            "agent_id": r["agent_id"], "agent_name": r["agent_name"], "runs": int(r["runs"]),
            "as_child": int(r["as_child"]), "succeeded": succeeded, "failed": failed,
            "cancelled": int(r["cancelled"]), "open": int(r["open"]), "success_rate": _rate(succeeded, failed),
            "p50_ms": None if r["p50_ms"] is None else round(float(r["p50_ms"]), 1),
            "p95_ms": None if r["p95_ms"] is None else round(float(r["p95_ms"]), 1),
            "attempts": int(r["attempts"]), "retried": int(r["retried"]), "llm_calls": int(r["llm_calls"]),
            "prompt_tokens": int(r["prompt_tokens"]), "output_tokens": int(r["output_tokens"]),
            "top_failures": reasons.get(r["agent_id"], []),
        })
    return agents


def _print(agents: list[dict[str, Any]], since: datetime, out: TextIO) -> None:
    print(f"invocations queued since {since.isoformat(timespec='seconds')}", file=out)
    if not agents:
        print("no invocations", file=out)
        return
    for a in agents:
        rate = "-" if a["success_rate"] is None else f"{a['success_rate'] * 100:.1f}%"
        p50 = "-" if a["p50_ms"] is None else f"{a['p50_ms']:.0f} ms"
        p95 = "-" if a["p95_ms"] is None else f"{a['p95_ms']:.0f} ms"
        name = f" ({a['agent_name']})" if a["agent_name"] else ""
        print(f"agent {a['agent_id']}{name}", file=out)
        print(f"  runs {a['runs']} (as a call_agent child {a['as_child']}): succeeded {a['succeeded']}, "
              f"failed {a['failed']}, cancelled {a['cancelled']}, open {a['open']}; success rate {rate}", file=out)
        print(f"  run time p50 {p50}, p95 {p95}; attempts {a['attempts']} ({a['retried']} run(s) retried)", file=out)
        print(f"  llm calls {a['llm_calls']}, tokens {a['prompt_tokens']} prompt + {a['output_tokens']} output",
              file=out)
        for f in a["top_failures"]:
            print(f"  failed {f['count']}x: {f['reason']}", file=out)


def cmd(conn: Conn, args: argparse.Namespace, out: TextIO) -> int:
    """``stats`` (run through the operator commands' runner, dispatcher/ops.py)."""
    now_row = conn.execute("SELECT now() AS now").fetchone()
    assert now_row is not None
    since = (now_row["now"] - timedelta(seconds=args.since)).astimezone(UTC)
    agents = collect(conn, since=since, agent_id=args.agent, user_id=args.user)
    if args.json:
        print(json.dumps({"since": since.isoformat(), "agents": agents}, indent=2), file=out)
    else:
        _print(agents, since, out)
    return EXIT_OK
