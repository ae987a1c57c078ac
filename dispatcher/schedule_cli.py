"""``python -m dispatcher schedule add|list|pause|resume|remove``: scheduled runs, managed by an operator.

Run through the operator commands' runner (dispatcher/ops.py): exit 0 done, 1 no such schedule, 2 bad
arguments (a bad expression, zone, interval, agent, user or session says which) or no database.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from core.db import Conn
from dispatcher import schedule_store
from dispatcher.ops import UsageError
from dispatcher.schedules import ScheduleError, Timing, format_interval, parse_timing

EXIT_OK, EXIT_NOT_FOUND = 0, 1
COMMAND = "schedule"


def add_commands(sub: Any) -> None:
    p = sub.add_parser(COMMAND, help="scheduled runs of an agent: add, list, pause, resume, remove")
    ss = p.add_subparsers(dest="schedule_command", required=True)
    a = ss.add_parser("add", help="run an agent on a cron schedule or at a fixed interval")
    a.add_argument("--agent", required=True, metavar="AGENT_ID")
    a.add_argument("--user", required=True, metavar="USER_ID", help="whose chat the runs are written to")
    a.add_argument("--cron", metavar="EXPR", help='5-field cron expression, e.g. "0 9 * * MON-FRI"')
    a.add_argument("--tz", metavar="ZONE", help="IANA time zone the cron expression is read in (default UTC)")
    a.add_argument("--every", metavar="INTERVAL", help="fixed interval, e.g. 30s, 10m, 2h, 1d")
    a.add_argument("--prompt", required=True, metavar="TEXT", help="the user message each run starts with")
    a.add_argument("--session", default="new", metavar="new|reuse|SESSION_ID",
                   help="new: a new chat per run (default); reuse: one chat of the schedule's own; or a Session id")
    a.add_argument("--json", action="store_true")
    lp = ss.add_parser("list", help="every schedule with its next due time and last run")
    lp.add_argument("--json", action="store_true")
    for name, text in (("pause", "stop firing (until resumed)"), ("resume", "fire again, from the next due time"),
                       ("remove", "delete the schedule (its past runs stay)")):
        q = ss.add_parser(name, help=text)
        q.add_argument("id", type=int, metavar="ID")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def _timing_text(row: dict[str, Any]) -> str:
    return Timing(cron=row["cron"], tz=row["tz"], every_s=row["every_s"]).describe()


def _print_list(rows: list[dict[str, Any]], out: TextIO, as_json: bool) -> None:
    if as_json:
        items = [{
            "id": r["id"], "agent_id": r["agent_id"], "user_id": r["user_id"], "prompt": r["prompt"],
            "cron": r["cron"], "tz": r["tz"] if r["cron"] else None,
            "every": format_interval(r["every_s"]) if r["every_s"] else None,
            "session": r["session_mode"] if r["session_mode"] != "fixed" else r["session_id"],
            "session_id": r["session_id"], "state": "paused" if r["paused"] else "active",
            "paused_reason": r["paused_reason"], "next_due_at": None if r["paused"] else _iso(r["next_due_at"]),
            "last_fired_at": _iso(r["last_fired_at"]), "last_job_id": r["last_job_id"],
            "last_job_status": r["last_job_status"], "runs": r["runs"],
        } for r in rows]
        print(json.dumps({"schedules": items}, indent=2), file=out)
        return
    if not rows:
        print("no schedules", file=out)
        return
    for r in rows:
        state = f"paused ({r['paused_reason']})" if r["paused"] and r["paused_reason"] else (
            "paused" if r["paused"] else f"next {_iso(r['next_due_at'])}")
        last = f"last {_iso(r['last_fired_at'])} job {r['last_job_id']} {r['last_job_status'] or ''}".rstrip() \
            if r["last_fired_at"] else "never fired"
        session = r["session_mode"] if r["session_mode"] != "fixed" else f"session {r['session_id']}"
        print(f"{r['id']:>4}  agent {r['agent_id']}  user {r['user_id']}  {_timing_text(r)}  {session}  "
              f"runs {r['runs']}  {state}  {last}  prompt {r['prompt'][:60]!r}", file=out)


def cmd(conn: Conn, args: argparse.Namespace, out: TextIO) -> int:
    """``schedule <add|list|pause|resume|remove>`` (errors in the operator commands' way: dispatcher/ops.py)."""
    sub = args.schedule_command
    try:
        if sub == "add":
            timing = parse_timing(cron=args.cron, tz=args.tz, every=args.every)
            new = schedule_store.NewSchedule(agent_id=args.agent, user_id=args.user, prompt=args.prompt,
                                             timing=timing, session=args.session)
            sid, first = schedule_store.add(conn, new)
            if args.json:
                print(json.dumps({"id": sid, "next_due_at": _iso(first)}), file=out)
            else:
                print(f"schedule {sid}: {timing.describe()}, first run at {_iso(first)}", file=out)
            return EXIT_OK
    except ScheduleError as exc:
        raise UsageError(str(exc)) from None
    if sub == "list":
        _print_list(schedule_store.list_all(conn), out, args.json)
        return EXIT_OK
    if sub in ("pause", "resume"):
        ok = schedule_store.set_paused(conn, args.id, sub == "pause",
                                       reason="paused by an operator" if sub == "pause" else None)
    else:
        ok = schedule_store.remove(conn, args.id)
    if not ok:
        print(f"dispatcher schedule: no schedule {args.id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"schedule {args.id}: {sub}d" if sub != "remove" else f"schedule {args.id}: removed", file=out)
    return EXIT_OK
