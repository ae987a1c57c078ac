"""Scale-out: 1, 2 and 4 dispatcher processes on one database draining one backlog (issue 18).

Each process is the real ``Dispatcher`` (claim loop, LISTEN, heartbeat, run slots, the real ``Runner``,
group commit) with only the Piston client swapped for the in-process no-op one (``machinery.noop_sandbox``):
a no-op sandbox. Every process has its own 10 slots (batch 10), as a deployment adds dispatchers.
The backlog is queued before the processes are told to go; the drain is timed from that moment (the
database's clock) to the last row's ``finished_at``.

In the same run, the check that no row ran twice: every outbox row ``succeeded`` with ``attempts`` 1 and
exactly one transition to ``running`` in ``agent_hub.invocation_outbox_event`` (a claim; a second one
would be a reclaim), and every Job SUCCEEDED with its one agent message. And the CPU each side spent per
invocation (the Postgres server's processes, the dispatcher processes), with the machine's busy share,
for the model: throughput <= cores / (Postgres CPU + dispatcher CPU per invocation).

``python -m bench.scaleout worker URL`` is one dispatcher process (driven over stdin/stdout).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import psutil
import psycopg

from bench import seed
from bench.measure import postgres_cpu_s

REPO = Path(__file__).resolve().parents[1]
SLOTS = 10
BATCH = 10


# -- one dispatcher process -------------------------------------------------------------------------


def worker(url: str) -> int:
    """Build a Dispatcher, say ``ready``, run from ``go`` until ``stop``, then print its counts as JSON."""
    from bench.machinery import dispatcher_config, noop_sandbox
    from core.config import LogConfig
    from core.logging import configure
    from dispatcher.worker import Dispatcher

    configure(LogConfig(fmt="json", level="warning"))
    d = Dispatcher(dispatcher_config(url, concurrency=SLOTS, batch=BATCH), sandbox=noop_sandbox(), listen=True)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    t = threading.Thread(target=d.run_forever, name="dispatcher", daemon=True)
    t.start()
    sys.stdin.readline()  # "stop" (or EOF: the parent went away)
    d.request_stop()
    t.join(60)
    print(json.dumps({"owner": d.cfg.owner, "outcomes": d.outcomes, "write_statements": d.committer.statements,
                      "write_commits": d.committer.batches}), flush=True)
    return 0


class _Worker:
    def __init__(self, url: str) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.scaleout", "worker", url], cwd=REPO,
                                     env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.ps = psutil.Process(self.proc.pid)

    @property
    def stdin(self) -> IO[str]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"scale-out worker did not start: {line!r} {self.output()}")

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def send(self, line: str) -> None:
        self.stdin.write(line + "\n")
        self.stdin.flush()

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            self.send("stop")
            out = self.proc.stdout.readline()
            self.proc.wait(60)
            return dict(json.loads(out)) if out.strip() else {"error": self.output()}
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]


# -- the measurement ---------------------------------------------------------------------------------


def _queue(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE agent_hub.invocation_outbox CASCADE")
        user_id, agent_id = seed.agent(conn, {"main.py": __file__})
        invs = seed.invocations(conn, user_id, agent_id, n, tag="scale")
        seed.outbox_rows(conn, invs)
        conn.execute("VACUUM ANALYZE")


def _check(url: str, n: int) -> dict[str, Any]:
    """Claims per row from the outbox and its history; the hub's side of every run."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE attempts <> 1), "
            "       max(attempts) FROM agent_hub.invocation_outbox").fetchone()
        claims = conn.execute(
            "SELECT count(*) FILTER (WHERE c <> 1), coalesce(max(c), 0), coalesce(sum(c), 0) FROM ("
            "  SELECT o.id, count(e.id) AS c FROM agent_hub.invocation_outbox o"
            "  LEFT JOIN agent_hub.invocation_outbox_event e ON e.outbox_id = o.id AND e.to_status = 'running'"
            "  GROUP BY o.id) per_row").fetchone()
        by_owner = conn.execute(
            "SELECT e.detail->>'lease_owner', count(*) FROM agent_hub.invocation_outbox_event e "
            "WHERE e.to_status = 'running' GROUP BY 1 ORDER BY 2 DESC").fetchall()
        jobs = conn.execute(
            'SELECT count(*) FILTER (WHERE j."status" = \'SUCCEEDED\'), '
            "(SELECT count(*) FROM \"ChatMessage\" m WHERE m.\"role\" = 'agent' AND m.\"sessionId\" IN "
            "   (SELECT o.session_id FROM agent_hub.invocation_outbox o)) "
            'FROM "Job" j WHERE j."id" IN (SELECT o.job_id FROM agent_hub.invocation_outbox o)').fetchone()
    assert rows and claims and jobs
    out = {
        "rows": rows[0], "succeeded": rows[1], "rows_with_attempts_not_1": rows[2], "max_attempts": rows[3],
        "rows_not_claimed_exactly_once": claims[0], "max_claims_per_row": claims[1], "claims": int(claims[2]),
        "claims_by_process": [c for _, c in by_owner], "jobs_succeeded": jobs[0], "agent_messages": jobs[1],
    }
    out["no_row_ran_twice"] = (out["rows"] == out["succeeded"] == out["claims"] == out["jobs_succeeded"]
                               == out["agent_messages"] == n and out["rows_with_attempts_not_1"] == 0
                               and out["rows_not_claimed_exactly_once"] == 0)
    return out


def drain(url: str, postmaster_pid: int, n: int, processes: int) -> dict[str, Any]:
    _queue(url, n)
    workers = [_Worker(url) for _ in range(processes)]
    results: list[dict[str, Any]] = []
    try:
        for w in workers:
            w.wait_ready()
        postmaster = psutil.Process(postmaster_pid)
        with psycopg.connect(url, autocommit=True) as conn:
            pg0, d0, m0, t0 = (postgres_cpu_s(postmaster), sum(w.cpu_s() for w in workers), psutil.cpu_times(),
                              time.perf_counter())
            row = conn.execute("SELECT clock_timestamp()").fetchone()
            assert row is not None
            go = row[0]
            for w in workers:
                w.send("go")
            deadline = time.monotonic() + 600
            while True:
                time.sleep(0.1)
                left = conn.execute("SELECT count(*) FROM agent_hub.invocation_outbox "
                                    "WHERE status IN ('pending', 'running')").fetchone()
                if left is not None and left[0] == 0:
                    break
                if time.monotonic() > deadline or any(w.proc.poll() is not None for w in workers):
                    raise RuntimeError(f"scale-out drain of {n} with {processes} process(es) did not finish: "
                                       f"{left and left[0]} open; {[w.output() for w in workers]}")
            pg1, d1, m1, t1 = (postgres_cpu_s(postmaster), sum(w.cpu_s() for w in workers), psutil.cpu_times(),
                              time.perf_counter())
            row = conn.execute("SELECT extract(epoch FROM max(finished_at) - %s) FROM agent_hub.invocation_outbox",
                               (go,)).fetchone()
            assert row is not None
            elapsed = float(row[0])
    finally:
        results = [w.finish() for w in workers]
    busy = (sum(m1) - m1.idle - m1.iowait) - (sum(m0) - m0.idle - m0.iowait)
    check = _check(url, n)
    if not check["no_row_ran_twice"]:
        raise RuntimeError(f"scale-out with {processes} process(es): a row ran twice or not at all: {check}")
    return {
        "processes": processes, "slots_per_process": SLOTS, "batch": BATCH, "jobs": n, "seconds": round(elapsed, 3),
        "per_s": round(n / elapsed, 1),
        "postgres_cpu_us_per_invocation": round((sum(pg1.values()) - sum(pg0.values())) / n * 1e6),
        "postgres_cpu_us_per_invocation_by_kind": {k: round((pg1[k] - pg0[k]) / n * 1e6) for k in pg0},
        "dispatcher_cpu_us_per_invocation": round((d1 - d0) / n * 1e6),
        # the whole machine's CPU while draining (other work on the host included), in cores
        "machine_busy_cores": round(busy / (t1 - t0), 2),
        "write_commits": sum(r.get("write_commits", 0) for r in results),
        "write_statements": sum(r.get("write_statements", 0) for r in results),
        "check": check,
    }


def run(url: str, postmaster_pid: int, n: int, *, counts: tuple[int, ...] = (1, 2, 4), rounds: int = 1) -> dict[str, Any]:
    """Rounds of 1, 2, 4 processes in turn (so a change in the machine's load hits every count); the
    median round of each count, and the model's figures from the CPU each side spent."""
    runs: dict[int, list[dict[str, Any]]] = {c: [] for c in counts}
    for _ in range(rounds):
        for c in counts:
            runs[c].append(drain(url, postmaster_pid, n, c))
    out: dict[str, Any] = {"jobs": n, "rounds": rounds, "by_processes": {}}
    for c, rs in runs.items():
        med = sorted(rs, key=lambda r: r["per_s"])[len(rs) // 2]
        out["by_processes"][str(c)] = {**med, "per_s_rounds": [r["per_s"] for r in rs]}
    one = out["by_processes"][str(counts[0])]
    pg_us = one["postgres_cpu_us_per_invocation"]
    disp_us = one["dispatcher_cpu_us_per_invocation"]
    cores = os.cpu_count() or 1
    out["model"] = {
        "postgres_cpu_us_per_invocation": pg_us, "dispatcher_cpu_us_per_invocation": disp_us,
        # both sides on this machine's cores: the most any number of dispatchers could drain here
        "ceiling_here_per_s": round(cores / ((pg_us + disp_us) / 1e6)),
        # on a larger machine Postgres' own cores are the limit: invocations/s per Postgres core
        "per_postgres_core_per_s": round(1e6 / pg_us),
        # and the dispatcher cores that rate needs
        "dispatcher_cores_per_postgres_core": round(disp_us / pg_us, 2),
    }
    out["ratio_2_to_1"] = round(out["by_processes"]["2"]["per_s"] / one["per_s"], 2) if "2" in out["by_processes"] else None
    out["no_row_ran_twice"] = all(r["check"]["no_row_ran_twice"] for rs in runs.values() for r in rs)
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        raise SystemExit(worker(sys.argv[2]))
    print("usage: python -m bench.scaleout worker DATABASE_URL (started by python -m bench)", file=sys.stderr)
    raise SystemExit(2)
