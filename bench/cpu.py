"""``python -m bench.cpu N ROUNDS noop_10,noop_50,full_10``: CPU per invocation of our drains, for A/B work.

Stage 1's drains (``bench.machinery.ours_drain``: the real ``Dispatcher`` with the no-op runner, or the real
``Runner`` with the no-op Piston) on one dedicated durable Postgres, without PgQueuer: one JSON line per drain
with the throughput, the dispatcher process's and the Postgres server's CPU per invocation, the writers'
commits and statements, the claims, the ``hub_events``/``hub_feed`` sends and the transactions Postgres
committed (``pg_xacts``, which unlike the CPU do not depend on the machine's load). On a shared 2-core machine the throughput is
noise and the CPU per invocation is the figure to compare: run it from two source trees (``cd`` into each;
this file reads the tree it is run from) alternately, a few rounds each (docs/performance.md, session 4).
``DISPATCHER_WRITERS`` and ``DISPATCHER_CLAIM_LINGER_MS`` in the environment override the drains' config.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import psycopg

from bench import machinery, seed
from bench.pgembed import EmbeddedPostgres
from core.config import LogConfig
from core.db import Conn
from core.logging import configure
from dispatcher import claim as claims
from dispatcher import events
from dispatcher.claim import Claimed
from dispatcher.config import DispatcherConfig

PAIRS = {"noop_10": (10, False), "noop_50": (50, False), "full_10": (10, True)}


class Counts:
    """Claims and hub_events sends during a drain (the module functions the dispatcher calls, wrapped)."""

    def __init__(self) -> None:
        self.claims = 0
        self.sends = 0
        claim, send = claims.claim, events._send_batch

        def counted_claim(*args: Any, **kwargs: Any) -> list[Claimed]:
            self.claims += 1
            return claim(*args, **kwargs)

        def counted_send(conn: Conn, batch: list[tuple[str, str]]) -> None:
            self.sends += 1
            send(conn, batch)

        claims.claim = counted_claim
        events._send_batch = counted_send


def _config_from_env() -> None:
    """Apply DISPATCHER_WRITERS / DISPATCHER_CLAIM_LINGER_MS from the environment to the drains' config."""
    overrides: dict[str, Any] = {}
    if "DISPATCHER_WRITERS" in os.environ:
        overrides["writers"] = int(os.environ["DISPATCHER_WRITERS"])
    if "DISPATCHER_CLAIM_LINGER_MS" in os.environ:
        overrides["claim_linger_s"] = float(os.environ["DISPATCHER_CLAIM_LINGER_MS"]) / 1000
    known = {f.name for f in dataclasses.fields(DispatcherConfig)}
    overrides = {k: v for k, v in overrides.items() if k in known}
    if overrides:
        base = machinery.dispatcher_config

        def config(url: str, **kwargs: Any) -> DispatcherConfig:
            return dataclasses.replace(base(url, **kwargs), **overrides)

        machinery.dispatcher_config = config


def _xacts(url: str) -> int:
    """Transactions committed in the database so far (the drain's set-up adds about ten to its count; its
    connections are closed, so their counts are in, by the time a drain returns)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def main(argv: list[str]) -> int:
    if len(argv) != 3 or any(k not in PAIRS for k in argv[2].split(",")):
        print(__doc__, file=sys.stderr)
        return 2
    n, rounds, keys = int(argv[0]), int(argv[1]), argv[2].split(",")
    configure(LogConfig(fmt="json", level="warning"))
    _config_from_env()
    counts = Counts()
    pg = EmbeddedPostgres().start()
    try:
        url = seed.migrated(pg.create_db("agenthub"))
        for _ in range(rounds):
            for key in keys:
                slots, full = PAIRS[key]
                counts.claims = counts.sends = 0
                xacts = _xacts(url)
                r = machinery.ours_drain(url, n, concurrency=slots, batch=10, full=full)
                xacts = _xacts(url) - xacts
                print(json.dumps({"k": key, "per_s": r["per_s"], "proc_us": r["process_cpu_us_per_job"],
                                  "pg_us": r["postgres_cpu_us_per_job"], "commits": r["write_commits"],
                                  "stmts": r["write_statements"], "claims": counts.claims, "sends": counts.sends,
                                  "pg_xacts": xacts, "load": round(os.getloadavg()[0], 2)}), flush=True)
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
