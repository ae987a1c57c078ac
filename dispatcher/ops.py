"""Operator commands: ``python -m dispatcher list|show|replay|cancel|prune`` (SQL in sql/queries/ops/).

Exit codes: 0 done; 1 some ids were not found or were refused; 2 usage or
configuration errors (bad arguments, no DATABASE_URL, database unreachable).
Every write records who ran it ($USER@host) and why in invocation_outbox_event.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TextIO

import psycopg

from core.config import ConfigError, database_url
from core.db import Conn, connect
from core.sqlfiles import query
from dispatcher.states import OutboxStatus

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
TERMINAL = [s.value for s in OutboxStatus if s.terminal]


class UsageError(Exception):
    """Bad arguments the parser could not catch; exit code 2."""


class Verdict(StrEnum):
    """What a replay/cancel did with one named id."""

    DONE = "done"
    DRY_RUN = "would_do"
    NOT_FOUND = "not_found"
    REFUSED = "refused"


@dataclass
class Report:
    """Per-id verdicts of one replay/cancel, printed as a table or JSON."""

    action: str
    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, ref: str | int, verdict: Verdict, *, row_id: int | None = None, job_id: str | None = None,
            status: str | None = None, note: str = "") -> None:
        self.items.append({"ref": str(ref), "id": row_id, "job_id": job_id, "status": status,
                           "result": verdict.value, "note": note})

    @property
    def exit_code(self) -> int:
        bad = {Verdict.NOT_FOUND.value, Verdict.REFUSED.value}
        return EXIT_PARTIAL if any(i["result"] in bad for i in self.items) else EXIT_OK


def parse_duration(text: str) -> float:
    """'2h', '30m', '1d', '45s' -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 45s, 30m, 2h, 1d)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def actor() -> str:
    """$USER@host, recorded on every operator write."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


# -- argument parsing --------------------------------------------------------------------------------
def _filters(p: argparse.ArgumentParser, *, status_choices: Sequence[str]) -> None:
    p.add_argument("--status", choices=list(status_choices), help="only rows in this outbox status")
    p.add_argument("--agent", metavar="AGENT_ID", help="only this agent's rows")
    p.add_argument("--since", type=parse_duration, metavar="AGE", help="queued within this long ago (e.g. 2h, 30m, 1d)")
    p.add_argument("--older-than", type=parse_duration, metavar="AGE", dest="older_than",
                   help="queued longer ago than this (e.g. 30m)")


def add_commands(sub: Any) -> None:
    """Add the operator subcommands to the dispatcher's argparse subparsers."""
    p = sub.add_parser("list", help="counts by status, then the newest matching rows")
    _filters(p, status_choices=[s.value for s in OutboxStatus])
    p.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("show", help="one invocation: row, Job, JobLogs, events")
    p.add_argument("ref", metavar="ID|JOB_ID")
    p.add_argument("--logs", type=int, default=50, help="newest JobLog lines to print (default 50)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("replay", help="run terminal invocations again with a fresh attempt budget")
    p.add_argument("refs", nargs="*", metavar="ID|JOB_ID")
    _filters(p, status_choices=TERMINAL)
    p.add_argument("--dry-run", action="store_true", dest="dry_run", help="say what would be replayed, change nothing")
    p.add_argument("--reason", default="", help="why (recorded in the event table)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("cancel", help="cancel pending or running invocations")
    p.add_argument("refs", nargs="+", metavar="ID|JOB_ID")
    p.add_argument("--reason", default="", help="why (recorded in the event table)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("prune", help="delete finished invocations (and their history) older than an age")
    p.add_argument("--older-than", type=parse_duration, metavar="AGE", dest="older_than", required=True,
                   help="finished longer ago than this (e.g. 30d); at least 1h")
    p.add_argument("--batch", type=int, default=1000, help="top-level rows per transaction (default 1000)")
    p.add_argument("--dry-run", action="store_true", dest="dry_run", help="count what would go, delete nothing")
    p.add_argument("--json", action="store_true")


# -- output ------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    return text.replace("\n", " ")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], out: TextIO, *, max_width: int = 60) -> None:
    """Left-aligned columns, one header line; long cells are cut with an ellipsis."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in line] for line in cells]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for line in cells:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip(), file=out)


def _dump(data: Any, out: TextIO) -> None:
    print(json.dumps(data, default=str, indent=2), file=out)


# -- resolving ids -----------------------------------------------------------------------------------
def _split_refs(refs: Sequence[str]) -> tuple[list[int], list[str]]:
    """Digits are outbox ids; anything else is a jobId (Prisma ids are uuids/cuids, never all digits)."""
    ids = [int(r) for r in refs if r.strip().isdigit()]
    job_ids = [r.strip() for r in refs if not r.strip().isdigit()]
    return ids, job_ids


def _find(conn: Conn, refs: Sequence[str]) -> dict[str, dict[str, Any]]:
    ids, job_ids = _split_refs(refs)
    rows = conn.execute(query("ops/find"), {"ids": ids, "job_ids": job_ids}).fetchall()
    by_ref: dict[str, dict[str, Any]] = {}
    for r in rows:
        by_ref.setdefault(str(r["id"]), r)
        by_ref.setdefault(r["job_id"], r)
    return {ref: by_ref[ref.strip()] for ref in refs if ref.strip() in by_ref}


# -- commands ----------------------------------------------------------------------------------------
def cmd_list(conn: Conn, args: argparse.Namespace, out: TextIO) -> int:
    params = {"status": args.status, "agent_id": args.agent, "since_s": args.since, "older_s": args.older_than,
              "limit": max(0, args.limit)}
    counts = conn.execute(query("ops/list_counts"), params).fetchall()
    rows = conn.execute(query("ops/list_rows"), params).fetchall()
    if args.json:
        _dump({"counts": {c["status"]: c["n"] for c in counts}, "rows": rows}, out)
        return EXIT_OK
    table(counts, ["status", "n", "oldest", "newest"], out)
    print(file=out)
    if rows:
        table(rows, ["id", "job_id", "agent_id", "status", "attempts", "job_status", "created_at", "finished_at",
                     "last_error"], out)
    else:
        print("no rows match", file=out)
    return EXIT_OK


def cmd_show(conn: Conn, args: argparse.Namespace, out: TextIO) -> int:
    found = _find(conn, [args.ref])
    if not found:
        print(f"not found: {args.ref}", file=sys.stderr)
        return EXIT_PARTIAL
    row = next(iter(found.values()))
    job = conn.execute(query("ops/show_job"), {"job_id": row["job_id"]}).fetchone()
    logs = conn.execute(query("ops/show_logs"), {"job_id": row["job_id"], "limit": max(0, args.logs)}).fetchall()
    events = conn.execute(query("ops/show_events"), {"id": row["id"]}).fetchall()
    if args.json:
        _dump({"row": row, "job": job, "logs": logs, "events": events}, out)
        return EXIT_OK
    width = max(len(k) for k in row)
    print("invocation", file=out)
    for key, value in row.items():
        print(f"  {key.ljust(width)}  {_cell(value)}", file=out)
    print("\njob", file=out)
    if job is None:
        print("  (the Job row no longer exists)", file=out)
    else:
        jw = max(len(k) for k in job)
        for key, value in job.items():
            print(f"  {key.ljust(jw)}  {_cell(value)}", file=out)
    print(f"\nevents ({len(events)})", file=out)
    table(events, ["at", "from_status", "to_status", "attempts", "actor", "reason", "detail"], out, max_width=90)
    print(f"\njob logs (newest {len(logs)})", file=out)
    table(logs, ["timestamp", "level", "message"], out, max_width=120)
    return EXIT_OK


def _resolve(conn: Conn, refs: Sequence[str], report: Report) -> dict[int, str]:
    """Named refs -> {outbox id: ref}; unknown refs are reported not_found."""
    found = _find(conn, refs)
    wanted: dict[int, str] = {}
    for ref in refs:
        row = found.get(ref)
        if row is None:
            report.add(ref, Verdict.NOT_FOUND, note="no outbox row with this id or jobId")
        else:
            wanted.setdefault(row["id"], ref)
    return wanted


def cmd_replay(conn: Conn, args: argparse.Namespace, out: TextIO) -> int:
    filtered = args.status is not None
    if filtered == bool(args.refs):
        raise UsageError("name ids/jobIds, or select with --status (and --since); not both")
    if filtered and args.since is None:
        raise UsageError("a filtered replay needs --since (e.g. --since 2h) so old failures are not re-run by accident")
    if not filtered and (args.agent or args.since is not None or args.older_than is not None):
        raise UsageError("--agent/--since/--older-than select rows together with --status")
    report = Report("replay")
    who = actor()
    reason = args.reason or "replayed by an operator"
    with conn.transaction():
        if filtered:
            params = {"status": args.status, "agent_id": args.agent, "since_s": args.since, "older_s": args.older_than}
            wanted = {r["id"]: str(r["id"]) for r in conn.execute(query("ops/select_for_replay"), params).fetchall()}
        else:
            wanted = _resolve(conn, args.refs, report)
        locked = conn.execute(query("ops/lock_rows"), {"ids": list(wanted)}).fetchall()
        todo: list[int] = []
        for r in locked:
            ref, status = wanted[r["id"]], OutboxStatus(r["status"])
            if not status.terminal:
                report.add(ref, Verdict.REFUSED, row_id=r["id"], job_id=r["job_id"], status=status.value,
                           note=f"still {status.value}; only finished rows can be replayed")
            elif not r["job_exists"]:
                report.add(ref, Verdict.REFUSED, row_id=r["id"], job_id=r["job_id"], status=status.value,
                           note="the Job row was deleted by the hub")
            else:
                todo.append(r["id"])
                report.add(ref, Verdict.DRY_RUN if args.dry_run else Verdict.DONE, row_id=r["id"], job_id=r["job_id"],
                           status=status.value, note=f"was {status.value}, Job {r['job_status']}")
        if todo and not args.dry_run:
            conn.execute(query("ops/set_actor"), {"actor": who, "reason": reason})
            done = {r["id"] for r in conn.execute(query("ops/replay"), {"ids": todo}).fetchall()}
            if done != set(todo):  # pragma: no cover - the rows are locked, so nothing can change them meanwhile
                raise RuntimeError("replay changed a different set of rows than it locked")
    _print_report(report, args, out)
    return report.exit_code


def cmd_cancel(conn: Conn, args: argparse.Namespace, out: TextIO) -> int:
    report = Report("cancel")
    who = actor()
    reason = args.reason or "cancelled by an operator"
    with conn.transaction():
        wanted = _resolve(conn, args.refs, report)
        locked = conn.execute(query("ops/lock_rows"), {"ids": list(wanted)}).fetchall()
        pending: list[int] = []
        running: list[int] = []
        for r in locked:
            ref, status = wanted[r["id"]], OutboxStatus(r["status"])
            common: dict[str, Any] = {"row_id": r["id"], "job_id": r["job_id"], "status": status.value}
            match status:
                case OutboxStatus.PENDING:
                    pending.append(r["id"])
                    report.add(ref, Verdict.DONE, **common, note="cancelled before it ran")
                case OutboxStatus.RUNNING if r["job_status"] in ("QUEUED", "PROCESSING"):
                    running.append(r["id"])
                    report.add(ref, Verdict.DONE, **common,
                               note="Job CANCELLED; the dispatcher stops relaying at its next heartbeat")
                case OutboxStatus.RUNNING if r["job_status"] == "CANCELLED":
                    report.add(ref, Verdict.DONE, **common, note="cancel already requested; the dispatcher is stopping it")
                case OutboxStatus.RUNNING:
                    report.add(ref, Verdict.REFUSED, **common, note=f"its Job is {r['job_status'] or 'deleted'}")
                case OutboxStatus.SUCCEEDED | OutboxStatus.FAILED | OutboxStatus.CANCELLED:
                    report.add(ref, Verdict.REFUSED, **common, note=f"already {status.value}")
        if pending or running:
            conn.execute(query("ops/set_actor"), {"actor": who, "reason": reason})
        if pending:
            conn.execute(query("ops/cancel_pending"), {"ids": pending, "actor": who})
        if running:
            conn.execute(query("ops/cancel_running"), {"ids": running, "actor": who, "reason": reason})
    _print_report(report, args, out)
    return report.exit_code


def _print_report(report: Report, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        _dump({"action": report.action, "dry_run": bool(getattr(args, "dry_run", False)), "items": report.items}, out)
        return
    if not report.items:
        print(f"{report.action}: nothing matched", file=out)
        return
    table(report.items, ["ref", "id", "job_id", "status", "result", "note"], out, max_width=80)
    counts: dict[str, int] = {}
    for item in report.items:
        counts[item["result"]] = counts.get(item["result"], 0) + 1
    print(f"{report.action}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), file=out)


def cmd_prune(conn: Conn, args: argparse.Namespace, out: TextIO) -> int:
    """Retention: the outbox keeps every finished row (for show and replay) until pruned. Batches of
    top-level rows, each batch its own transaction, so pruning never holds locks for long; running and
    pending rows (and finished ones whose call_agent tree still has one) are never touched."""
    if args.older_than < 3600:
        raise UsageError("--older-than must be at least 1h: newer rows are still being replayed and shown")
    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    after, deleted, ready = 0, 0, 0
    while True:
        row = conn.execute(query("ops/prune"), {"older_s": args.older_than, "batch": args.batch, "after": after,
                                                "dry_run": args.dry_run}).fetchone()
        assert row is not None
        deleted += row["rows_deleted"]
        ready += row["rows_ready"]
        if row["roots_seen"] < args.batch:
            break
        after = row["last_root"]
    result = {"action": "prune", "dry_run": args.dry_run, "older_than_s": args.older_than,
              "rows": ready if args.dry_run else deleted}
    if args.json:
        _dump(result, out)
    else:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"prune: {verb} {result['rows']} finished outbox row(s) (with their events) older than "
              f"{args.older_than / 86400:g} day(s)", file=out)
    return EXIT_OK


COMMANDS = {"list": cmd_list, "show": cmd_show, "replay": cmd_replay, "cancel": cmd_cancel, "prune": cmd_prune}


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run one operator command; returns the exit code."""
    try:
        url = database_url()
    except ConfigError as exc:
        print(f"dispatcher {args.command}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with connect(url, autocommit=True, application_name="agent-hub-ops") as conn:
            return COMMANDS[args.command](conn, args, out)
    except UsageError as exc:
        print(f"dispatcher {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"dispatcher {args.command}: cannot reach the database: {first}", file=sys.stderr)
        return EXIT_USAGE
