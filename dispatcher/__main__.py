"""``python -m dispatcher run``: the dispatcher process (the Procfile's ``dispatcher``)."""

from __future__ import annotations

import argparse
import os
import sys

from core.config import ConfigError, LogConfig
from core.logging import configure
from dispatcher import ops, schedule_cli, stats_cli, try_cli, verify
from dispatcher.config import DispatcherConfig
from dispatcher.worker import Dispatcher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dispatcher", description="Run agents queued in the outbox.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="claim and run invocations until SIGTERM")
    ops.add_commands(sub)  # list / show / replay / cancel / prune
    schedule_cli.add_commands(sub)  # schedule add / list / pause / resume / remove
    stats_cli.add_commands(sub)
    try_cli.add_commands(sub)
    sub.add_parser("verify", help="check the database (migrations, Prisma tables) and Piston (Python runtime); exit 0/1")
    args = parser.parse_args(argv)
    if args.command == "verify":
        return verify.run(os.environ)
    commands = {**ops.COMMANDS, schedule_cli.COMMAND: schedule_cli.cmd, stats_cli.COMMAND: stats_cli.cmd}
    if args.command in commands:
        return ops.run(args, commands=commands)  # operator commands need only DATABASE_URL
    try:
        cfg = DispatcherConfig.from_env()
        configure(LogConfig.from_env())
    except ConfigError as exc:
        print(f"dispatcher: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == try_cli.COMMAND:
        return try_cli.run(cfg, args)
    if args.command == "run":
        d = Dispatcher(cfg)
        d.install_signal_handlers()
        d.run_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
