"""``python -m dispatcher try AGENT_ID --prompt TEXT [--session ID] [--user ID] [--user-var K=V]…``: run a stored
agent as an invocation would, through the configured Piston, and print what it does as it happens — its
messages, progress, user variables, log lines, call_agent children and how it ended — writing nothing to the
hub's tables (dispatcher/dryrun.py). Exit 0 when the agent succeeded, 1 when it did not, 2 on bad arguments or
configuration.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import psycopg

from core.db import make_pool
from dispatcher import context
from dispatcher.config import DispatcherConfig
from dispatcher.control import RunControl
from dispatcher.dryrun import DryWriteBack, Printer, dry_row, wire_dry_runner
from dispatcher.gemini import GeminiClient
from dispatcher.outcome import Disposition
from dispatcher.sandbox.piston.client import PistonClient
from dispatcher.states import OutboxStatus

COMMAND = "try"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_commands(sub: Any) -> None:
    p = sub.add_parser(COMMAND, help="run a stored agent as an invocation would, print what it does, write nothing")
    p.add_argument("agent", metavar="AGENT_ID")
    p.add_argument("--prompt", required=True, metavar="TEXT")
    p.add_argument("--session", metavar="SESSION_ID", help="run with this session's history and user variables")
    p.add_argument("--user", metavar="USER_ID", help="the user the run is for (default: the session's, else none)")
    p.add_argument("--user-var", action="append", default=[], metavar="KEY=VALUE", dest="user_vars",
                   help="a user variable the agent sees (over the session's); repeatable")


def _user_vars(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--user-var must be KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def run(cfg: DispatcherConfig, args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        user_vars = _user_vars(args.user_vars)
    except ValueError as exc:
        print(f"dispatcher try: {exc}", file=err)
        return EXIT_USAGE
    pool = make_pool(cfg.database_url, min_size=1, max_size=4, timeout_s=10.0, statement_timeout_ms=30_000,
                     application_name="agent-hub-try")
    try:
        pool.open(wait=True, timeout=10.0)
        user_id = args.user or "dry-run-user"
        if args.session:
            owner = context.session_owner(pool, args.session)
            if owner is None or owner[1] != args.agent:
                print(f"dispatcher try: no session {args.session!r} of agent {args.agent!r}", file=err)
                return EXIT_USAGE
            user_id = args.user or owner[0]
        if not context.agent_exists(pool, args.agent):
            print(f"dispatcher try: no agent {args.agent!r}", file=err)
            return EXIT_USAGE
        printer = Printer(out)
        sandbox = PistonClient(cfg.piston_url, max_output_chars=cfg.max_output_chars, pool_size=2)
        runner = wire_dry_runner(cfg, pool, sandbox, GeminiClient(cfg), printer, user_vars)
        row = dry_row(agent_id=args.agent, user_id=user_id, prompt=args.prompt, session_id=args.session)
        printer.line(0, f"dry run of agent {args.agent} (nothing is written to the hub)")
        outcome = runner.attempt(row, DryWriteBack(pool, printer, job_id=row.job_id), RunControl())
    except psycopg.OperationalError as exc:
        print(f"dispatcher try: cannot reach the database: {str(exc).strip().splitlines()[0]}", file=err)
        return EXIT_USAGE
    finally:
        pool.close()
    if outcome.disposition is Disposition.FINISH and outcome.status is not None:
        printer.line(0, f"finished: {outcome.status.value}" + (f" ({outcome.error})" if outcome.error else ""))
        return EXIT_OK if outcome.status is OutboxStatus.SUCCEEDED else EXIT_FAILED
    printer.line(0, f"not finished: {outcome.disposition.value}" + (f" ({outcome.error})" if outcome.error else ""))
    return EXIT_FAILED
