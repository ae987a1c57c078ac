"""Postgres down for twice the lease while three dispatchers run slow agents: no two runs of one invocation
overlap in the sandbox (a dispatcher that cannot renew its leases stops its runs first), every invocation ends
once with its messages once, and no invocation whose agent had already finished runs again while its dispatcher
still held the row (its outcome waits for Postgres instead)."""

from __future__ import annotations

import itertools
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests import factories
from tests.e2e.dedicated_pg import DedicatedPostgres
from tests.stack import Stack, agent_with_code

LEASE_S = 3.0
ENV = {"DISPATCHER_LEASE_S": str(LEASE_S), "DISPATCHER_HEARTBEAT_S": "0.5", "DISPATCHER_POLL_INTERVAL_S": "0.5",
       "DISPATCHER_CONCURRENCY": "4", "PISTON_TRANSPORT": "ws", "AGENT_RUN_TIMEOUT_MS": "20000"}
# Long enough to be in flight when Postgres goes, short enough that some finish during the outage.
AGENT = ("import time, hub\nfor i in range(3):\n    hub.send_message(f'm{i}')\n"
         "    time.sleep(0.6 + (hash(hub.get_job_id()) % 5) * 0.3)\n")
N = 24


@pytest.fixture
def dedicated_pg() -> Iterator[DedicatedPostgres]:
    pg = DedicatedPostgres().start()
    yield pg
    pg.close()


def log_lines(stack: Stack) -> list[dict]:
    out = []
    for n, d in enumerate(stack.dispatchers):
        for line in d.output().splitlines():
            if line.startswith("{"):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                entry["_dispatcher"] = n
                out.append(entry)
    return out


def ts(entry: dict) -> float:
    return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


def test_postgres_down_for_twice_the_lease_overlaps_no_runs_and_reruns_no_finished_agent(
    dedicated_pg: DedicatedPostgres, tmp_path: Path
) -> None:
    stack = Stack(dedicated_pg.url, web=False, dispatcher_env=ENV)
    stack.piston.start()
    try:
        for _ in range(3):
            stack.add_dispatcher()
        with stack.connect() as conn:
            first = agent_with_code(conn, tmp_path, AGENT)
            ws = [first]
            for _ in range(N - 1):
                sid = factories.session(conn, first.user_id, first.agent_id)
                ws.append(factories.World(first.user_id, first.agent_id, sid,
                                          factories.job(conn, first.user_id, first.agent_id, sid), "p"))
            for w in ws:
                factories.enqueue(conn, w)
        deadline = time.monotonic() + 60
        while True:
            with stack.connect() as conn:
                running = conn.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox WHERE status = 'running'"
                                       ).fetchone()["n"]
            if running >= 8:
                break
            assert time.monotonic() < deadline, f"runs did not start\n{stack.logs()}"
            time.sleep(0.05)
        dedicated_pg.stop()
        time.sleep(2 * LEASE_S + 1)
        dedicated_pg.start()

        for w in ws:
            assert stack.wait_job(w.job_id, timeout=120)["status"] == "SUCCEEDED"
        for w in ws:
            assert stack.messages(w.session_id) == ["m0", "m1", "m2"]
        with stack.connect() as conn:
            finishes = conn.execute(
                "SELECT o.job_id, count(*) FILTER (WHERE e.reason = 'finished') AS n, max(o.attempts) AS attempts "
                "FROM agent_hub.invocation_outbox o JOIN agent_hub.invocation_outbox_event e ON e.outbox_id = o.id "
                "GROUP BY o.job_id").fetchall()
        assert all(f["n"] == 1 for f in finishes), finishes

        lines = log_lines(stack)
        runs: dict[int, list[tuple[float, float, int, int, str]]] = defaultdict(list)
        starts: dict[tuple[int, int, int], float] = {}
        for e in lines:
            key = (e["_dispatcher"], e.get("outbox_id", -1), e.get("attempt", -1))
            if e.get("event") == "piston_run_start":
                starts[key] = ts(e)
            elif e.get("event") == "piston_run_end" and key in starts:
                runs[key[1]].append((starts.pop(key), ts(e), key[2], key[0], e.get("status", "")))
        # No two sandbox runs of one invocation at the same time: each ended before the next began.
        for outbox_id, spans in runs.items():
            spans.sort()
            for a, b in itertools.pairwise(spans):
                assert a[1] <= b[0], (f"row {outbox_id}: attempt {a[2]} ran until {a[1]}, attempt {b[2]} began {b[0]}\n"
                                      + "\n".join(json.dumps(e) for e in lines if e.get("outbox_id") == outbox_id))
        # A run whose agent had finished (status OK) and that still ran again: its dispatcher must have lost the row
        # to another one (outcome_dropped), never given up while it still held it.
        rerun = {oid for oid, spans in runs.items() if len({s[2] for s in spans}) > 1}
        for oid in rerun:
            first_ok = [s for s in sorted(runs[oid]) if s[4] == "OK"]
            if first_ok and first_ok[0][2] < max(s[2] for s in runs[oid]):
                d, attempt = first_ok[0][3], first_ok[0][2]
                said = [e["event"] for e in lines if e["_dispatcher"] == d and e.get("outbox_id") == oid
                        and e.get("attempt") == attempt]
                assert "outcome_dropped" in said and "outcome_not_written" not in said, (oid, said)
        assert not any(e.get("event") == "outcome_not_written" for e in lines)
        self_fenced = sum(1 for e in lines if e.get("event") == "lease_self_fenced")
        assert self_fenced > 0, "the outage must have outlasted the leases of runs in flight"
    finally:
        stack.close()
