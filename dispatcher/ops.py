"""Operator commands: ``python -m dispatcher list|show|replay|cancel|prune``: arguments, output, exit codes.

The reads and writes are dispatcher/ops_store.py's; what a command may do with a row is
dispatcher/states.py's. The hub_events a write owes are sent once its transaction has committed.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TextIO

import psycopg

from core.config import ConfigError, database_url
from core.db import Conn, connect
from core.vocabulary import HubEvent, OutboxStatus
from dispatcher import ops_store as store
from dispatcher.events import send_now
from dispatcher.ops_store import Filters
from dispatcher.states import CancelMove, can_replay, cancel_move

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
TERMINAL = [s.value for s in OutboxStatus if can_replay(s)]


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


# -- commands ----------------------------------------------------------------------------------------
def _filters_of(args: argparse.Namespace) -> Filters:
    return Filters(status=args.status, agent_id=args.agent, since_s=args.since, older_s=args.older_than)


def cmd_list(conn: Conn, args: argparse.Namespace, out: TextIO) -> int:
    filters = _filters_of(args)
    counts = store.counts(conn, filters)
    rows = store.rows(conn, filters, args.limit)
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
    found = store.find(conn, [args.ref])
    if not found:
        print(f"not found: {args.ref}", file=sys.stderr)
        return EXIT_PARTIAL
    row = next(iter(found.values()))
    job = store.job(conn, row["job_id"])
    logs = store.job_logs(conn, row["job_id"], args.logs)
    events = store.history(conn, row["id"])
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
    found = store.find(conn, refs)
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
    announce: list[HubEvent] = []
    with conn.transaction():
        if filtered:
            wanted = {row_id: str(row_id) for row_id in store.select_for_replay(conn, _filters_of(args))}
        else:
            wanted = _resolve(conn, args.refs, report)
        todo: list[int] = []
        for r in store.lock(conn, list(wanted)):
            ref, status = wanted[r.id], r.status
            if not can_replay(status):
                report.add(ref, Verdict.REFUSED, row_id=r.id, job_id=r.job_id, status=status.value,
                           note=f"still {status.value}; only finished rows can be replayed")
            elif not r.job_exists:
                report.add(ref, Verdict.REFUSED, row_id=r.id, job_id=r.job_id, status=status.value,
                           note="the Job row was deleted by the hub")
            else:
                todo.append(r.id)
                report.add(ref, Verdict.DRY_RUN if args.dry_run else Verdict.DONE, row_id=r.id, job_id=r.job_id,
                           status=status.value, note=f"was {status.value}, Job {r.job_status}")
        if todo and not args.dry_run:
            store.set_actor(conn, who, reason)
            done, announce = store.replay(conn, todo)
            if set(done) != set(todo):  # pragma: no cover - the rows are locked, so nothing can change them meanwhile
                raise RuntimeError("replay changed a different set of rows than it locked")
        store.feed_statuses(conn, announce)  # the Jobs' QUEUED on the feed, in this transaction (last)
    send_now(conn, announce)  # committed: the Jobs' QUEUED status, for the hub's live UI
    _print_report(report, args, out)
    return report.exit_code


def cmd_cancel(conn: Conn, args: argparse.Namespace, out: TextIO) -> int:
    report = Report("cancel")
    who = actor()
    reason = args.reason or "cancelled by an operator"
    announce: list[HubEvent] = []
    with conn.transaction():
        wanted = _resolve(conn, args.refs, report)
        pending: list[int] = []
        running: list[int] = []
        for r in store.lock(conn, list(wanted)):
            ref, status = wanted[r.id], r.status
            common: dict[str, Any] = {"row_id": r.id, "job_id": r.job_id, "status": status.value}
            match cancel_move(status, r.job_status):
                case CancelMove.CANCEL_ROW:
                    pending.append(r.id)
                    report.add(ref, Verdict.DONE, **common, note="cancelled before it ran")
                case CancelMove.CANCEL_JOB:
                    running.append(r.id)
                    report.add(ref, Verdict.DONE, **common,
                               note="Job CANCELLED; the dispatcher stops relaying at its next heartbeat")
                case CancelMove.ALREADY_REQUESTED:
                    report.add(ref, Verdict.DONE, **common, note="cancel already requested; the dispatcher is stopping it")
                case CancelMove.REFUSED_JOB:
                    report.add(ref, Verdict.REFUSED, **common, note=f"its Job is {r.job_status or 'deleted'}")
                case CancelMove.REFUSED_FINISHED:
                    report.add(ref, Verdict.REFUSED, **common, note=f"already {status.value}")
        if pending or running:
            store.set_actor(conn, who, reason)
        if pending:
            announce += store.cancel_pending(conn, pending, who)
        if running:
            announce += store.cancel_running(conn, running, who, reason)
        store.feed_statuses(conn, announce)  # the Jobs' CANCELLED on the feed: one insert, last (core/feed.py)
    send_now(conn, announce)  # committed: the Jobs' CANCELLED status, for the hub's live UI
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
        row = store.prune_batch(conn, older_s=args.older_than, batch=args.batch, after=after, dry_run=args.dry_run)
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


Command = Callable[[Conn, argparse.Namespace, TextIO], int]


def run(args: argparse.Namespace, out: TextIO = sys.stdout, commands: Mapping[str, Command] | None = None) -> int:
    """Run one operator command (``commands``: name -> function, default COMMANDS); returns the exit code."""
    try:
        url = database_url()
    except ConfigError as exc:
        print(f"dispatcher {args.command}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with connect(url, autocommit=True, application_name="agent-hub-ops") as conn:
            return (COMMANDS if commands is None else commands)[args.command](conn, args, out)
    except UsageError as exc:
        print(f"dispatcher {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"dispatcher {args.command}: cannot reach the database: {first}", file=sys.stderr)
        return EXIT_USAGE
