"""Stages 3-5: the real processes (gunicorn ingress, dispatcher, localpiston) under load.

- ingress: POST /invoke with 8 concurrent keep-alive clients, against pgbench's single-row
  insert commits with 8 clients on the same server (the floor).
- e2e: POST -> Job SUCCEEDED for a trivial agent, minus the sandbox's own wall time.
- saturation: a backlog of 1 s agents on 8 slots; the share of time all 8 were busy.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import requests

from bench import seed
from bench.measure import PeakRss, pct, summary_ms
from bench.pgembed import EmbeddedPostgres
from tests.integration.localpiston_proc import LocalPiston, free_port

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 8
# The dispatcher asks for AGENT_RUN_TIMEOUT_MS=10000: localpiston must allow it.
PISTON_ENV = {"PISTON_RUN_TIMEOUT": "20000", "PISTON_RUN_CPU_TIME": "20000", "PISTON_OUTPUT_MAX_SIZE": "100000"}


class Proc:
    """A service process whose output goes to a temp file (a full pipe would block it)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        full = {**os.environ, **env, "PYTHONPATH": str(REPO), "LOG_LEVEL": "warning"}
        self.proc = subprocess.Popen(args, cwd=REPO, env=full, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def web_ready(web: Proc, base: str, rss: PeakRss | None) -> None:
    """Until the web process at ``base`` answers /readyz (60 s at most); then its peak RSS is watched."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(base + "/readyz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if web.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"web did not start:\n{web.output()}")
        time.sleep(0.05)
    if rss is not None:
        rss.watch("web", web.pid)


def start_web(url: str, rss: PeakRss | None) -> tuple[Proc, str]:
    port = free_port()
    web = Proc([sys.executable, "-m", "ingress", "--host", "127.0.0.1", "--port", str(port)], {"DATABASE_URL": url})
    base = f"http://127.0.0.1:{port}"
    web_ready(web, base, rss)
    return web, base


def start_dispatcher(url: str, piston_url: str, env: dict[str, str], rss: PeakRss | None) -> Proc:
    d = Proc([sys.executable, "-m", "dispatcher", "run"], {
        "DATABASE_URL": url, "PISTON_URL": piston_url, "AGENT_RUN_TIMEOUT_MS": "10000", **env})
    if rss is not None:
        rss.watch("dispatcher", d.pid)
    return d


# -- ingress vs the Postgres floor -----------------------------------------------------------------


async def _post_all(base: str, invs: list[seed.Invocation], clients: int) -> tuple[list[float], int, float]:
    queue: asyncio.Queue[seed.Invocation] = asyncio.Queue()
    for inv in invs:
        queue.put_nowait(inv)
    latencies: list[float] = []
    errors = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while True:
            try:
                inv = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            async with session.post(base + inv.path, json=inv.body()) as resp:
                await resp.read()
                if resp.status != 202:
                    errors += 1
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def ingress(pg: EmbeddedPostgres, url: str, n: int, rss: PeakRss, *, floor_s: float) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        user_id, agent_id = seed.agent(conn)
        warm = seed.invocations(conn, user_id, agent_id, 200, tag="warm")
        invs = seed.invocations(conn, user_id, agent_id, n, tag="ingress")
        conn.execute("VACUUM ANALYZE")
    web, base = start_web(url, rss)
    try:
        asyncio.run(_post_all(base, warm, CLIENTS))  # connections, pools and plans warmed up
        lat, errors, elapsed = asyncio.run(_post_all(base, invs, CLIENTS))
    finally:
        web.stop()
    ours = {"requests": n, "errors": errors, "per_s": round(n / elapsed, 1), **summary_ms(lat),
            "gunicorn": "WEB_CONCURRENCY=2 workers x WEB_THREADS=4 (defaults)"}
    floor = pgbench_floor(pg, url, floor_s, "INSERT INTO bench_floor (job_id) VALUES (md5(random()::text));")
    # The ingress must NOTIFY in its transaction; a NOTIFY serialises commits (a database-wide lock
    # held through the WAL flush), so this is the floor for any design that wakes dispatchers so.
    notify = pgbench_floor(pg, url, floor_s, "BEGIN;\nINSERT INTO bench_floor (job_id) VALUES (md5(random()::text));\n"
                                             "SELECT pg_notify('bench_floor', 'x');\nCOMMIT;")
    return {"ingress": ours, "floor": floor, "floor_with_notify": notify,
            "ratio": round(ours["per_s"] / floor["per_s"], 3), "ratio_to_notify_floor": round(ours["per_s"] / notify["per_s"], 3)}


def pgbench_floor(pg: EmbeddedPostgres, url: str, seconds: float, sql: str) -> dict[str, Any]:
    """pgbench, 8 clients, each transaction one single-row INSERT commit (the cheapest durable write)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                     "job_id TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    script = Path(tempfile.mkstemp(suffix=".sql")[1])
    script.write_text(sql + "\n")
    try:
        out = subprocess.run(
            [str(pg.bin / "pgbench"), "-n", "-c", str(CLIENTS), "-j", "2", "-T", str(max(1, round(seconds))), "-r",
             "-f", str(script), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", url.rsplit("/", 1)[1]],
            check=True, capture_output=True, text=True,
        ).stdout
    finally:
        script.unlink()
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    lat = re.search(r"latency average = ([0-9.]+) ms", out)
    return {"tool": "pgbench", "script": sql, "clients": CLIENTS, "seconds": seconds, "per_s": round(tps, 1),
            "latency_avg_ms": float(lat.group(1)) if lat else None}


# -- end to end through localpiston ------------------------------------------------------------------

TRIVIAL_AGENT = 'import hub\nhub.send_message("ok")\n'
SLEEP_AGENT = (
    "import time\nt0 = time.time()\nimport hub\ntime.sleep(1)\n"
    "hub.send_message(repr(t0) + ' ' + repr(time.time()))\n"
)


def _agent_files(tmp: Path, code: str) -> dict[str, str]:
    path = tmp / f"agent-{time.monotonic_ns()}" / "main.py"
    path.parent.mkdir(parents=True)
    path.write_text(code)
    os.chmod(path.parent, 0o755)
    return {"main.py": str(path)}


def _wait_done(url: str, job_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM agent_hub.invocation_outbox "
                               "WHERE job_id = ANY(%s) AND finished_at IS NOT NULL", (job_ids,)).fetchone()
            if row and row[0] == len(job_ids):
                return
            time.sleep(0.02)
    raise RuntimeError("invocations did not finish in time")


def e2e(url: str, n: int, rss: PeakRss, tmp: Path, transport: str) -> dict[str, Any]:
    """Sequential invocations of a trivial agent: POST -> outbox finished_at, minus Piston's wall time."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE agent_hub.invocation_outbox CASCADE")  # earlier stages' rows must not queue ahead of ours
        user_id, agent_id = seed.agent(conn, _agent_files(tmp, TRIVIAL_AGENT))
        invs = seed.invocations(conn, user_id, agent_id, n + 5, tag="e2e")
    piston = LocalPiston(PISTON_ENV).start()
    web, base = start_web(url, rss)
    d = start_dispatcher(url, piston.url, {"PISTON_TRANSPORT": transport, "DISPATCHER_POLL_INTERVAL_S": "2"}, rss)
    posted: dict[str, float] = {}
    try:
        with requests.Session() as http:
            for i, inv in enumerate(invs):
                t0 = time.time()
                r = http.post(base + inv.path, json=inv.body(), timeout=10)
                if r.status_code != 202:
                    raise RuntimeError(f"POST answered {r.status_code}: {r.text}")
                try:
                    _wait_done(url, [inv.job_id], 30)
                except RuntimeError:
                    raise RuntimeError(f"{inv.job_id} did not finish; dispatcher output:\n{d.output()}") from None
                if i >= 5:  # the first few warm up localpiston and the pools
                    posted[inv.job_id] = t0
    finally:
        d.stop()
        web.stop()
        piston.close()
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT o.job_id, o.status::text AS status, o.created_at, o.started_at, o.finished_at, o.result, o.last_error "
            "FROM agent_hub.invocation_outbox o WHERE o.job_id = ANY(%s)", (list(posted),)).fetchall()
        started_log: dict[str, Decimal] = dict(conn.execute(
            'SELECT "jobId", extract(epoch FROM min("timestamp")) FROM "JobLog" WHERE "jobId" = ANY(%s) '
            "AND \"message\" LIKE 'run started%%' GROUP BY 1", (list(posted),)).fetchall())
    total, overhead, walls, queued_to_claim, outside_call = [], [], [], [], []
    post_to_commit, claim_to_run_started, run_started_to_finished_minus_wall = [], [], []
    for job_id, status, created, started, finished, result, error in rows:
        if status != "succeeded":
            raise RuntimeError(f"{job_id} ended {status}: {error}")
        e2e_s = finished.timestamp() - posted[job_id]
        wall = float(result["wall_ms"]) / 1000
        total.append(e2e_s)
        walls.append(wall)
        overhead.append(e2e_s - wall)
        # elapsed_s: the dispatcher's own clock around the Piston call (incl. writing the message that arrives
        # during it), so this is the time spent outside the sandbox service altogether
        outside_call.append(e2e_s - float(result["elapsed_s"]))
        queued_to_claim.append((started - created).total_seconds())
        post_to_commit.append(created.timestamp() - posted[job_id])  # created_at: the ingress transaction's start
        run_started = float(started_log[job_id])  # JobLog "run started": context loaded, bundle built (ms precision)
        claim_to_run_started.append(run_started - started.timestamp())
        run_started_to_finished_minus_wall.append(finished.timestamp() - run_started - wall)
    return {
        "breakdown": {
            "post_to_ingress_txn": summary_ms(post_to_commit),
            "claim_to_run_started_log": summary_ms(claim_to_run_started),
            "run_started_to_finished_minus_piston_wall": summary_ms(run_started_to_finished_minus_wall),
        },"transport": transport, "overhead": summary_ms(overhead), "post_to_finished": summary_ms(total),
            "overhead_outside_piston_call": summary_ms(outside_call),
            "piston_wall": summary_ms(walls), "commit_to_claim": summary_ms(queued_to_claim)}


def saturation(url: str, backlog: int, rss: PeakRss, tmp: Path, slots: int = 8) -> dict[str, Any]:
    """A backlog of 1 s agents on `slots` slots: the share of the backlog's time all slots ran an agent."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE agent_hub.invocation_outbox CASCADE")
        user_id, agent_id = seed.agent(conn, _agent_files(tmp, SLEEP_AGENT))
        invs = seed.invocations(conn, user_id, agent_id, backlog, tag="sat")
    piston = LocalPiston({**PISTON_ENV, "PISTON_MAX_CONCURRENT_JOBS": str(slots)}).start()
    web, base = start_web(url, rss)
    d = start_dispatcher(url, piston.url, {"DISPATCHER_CONCURRENCY": str(slots), "PISTON_TRANSPORT": "ws"}, rss)
    try:
        time.sleep(1.0)  # the dispatcher is up and idle before the backlog arrives
        first_post = time.time()
        asyncio.run(_post_all(base, invs, CLIENTS))
        _wait_done(url, [i.job_id for i in invs], 120)
    finally:
        d.stop()
        web.stop()
        piston.close()
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            'SELECT m."content", extract(epoch FROM o.started_at), extract(epoch FROM o.finished_at), '
            "(o.result->>'elapsed_s')::float8 "
            'FROM agent_hub.invocation_outbox o JOIN "ChatMessage" m ON m."sessionId" = o.session_id '
            "AND m.\"role\" = 'agent' WHERE o.job_id = ANY(%s)", ([i.job_id for i in invs],)).fetchall()
    spans = sorted((float(a), float(b)) for a, b in (content.split() for content, _, _, _ in rows))
    # The same slots as the dispatcher holds them: each Piston call, from the request sent to the result in
    # (elapsed_s, the dispatcher's own clock, ending just before the finish statement that set finished_at).
    calls = sorted((float(fin) - float(el), float(fin)) for _, _, fin, el in rows)
    # Where a slot's time goes outside the agent: claim -> agent's first line, agent's last line -> row finished.
    claim_to_start = [float(c.split()[0]) - float(st) for c, st, _, _ in rows]
    end_to_finish = [float(fin) - float(c.split()[1]) for c, _, fin, _ in rows]
    if len(spans) != backlog:
        raise RuntimeError(f"{len(spans)} of {backlog} agents reported their times")
    # The backlog lasts until the last agent started: after that, fewer than `slots` rows are left to run.
    window_end = max(s for s, _ in spans)
    first_start, first_call = min(s for s, _ in spans), min(s for s, _ in calls)
    gaps = _slot_gaps(spans, slots)
    return {
        "backlog": backlog, "slots": slots, "agent_seconds": 1.0,
        "window_s": round(window_end - first_post, 3),
        "all_busy_fraction": _share_at_least(spans, slots, first_post, window_end),
        "all_busy_fraction_after_first_start": _share_at_least(spans, slots, first_start, window_end),
        # all slots held by a Piston call (sandbox set-up and interpreter start-up included): how well the
        # dispatcher keeps Piston fed, as against how much of that time the agents' own code ran
        "all_calls_in_flight_fraction": _share_at_least(calls, slots, first_post, window_end),
        "all_calls_in_flight_fraction_after_first_start": _share_at_least(calls, slots, first_call, window_end),
        "ramp_first_post_to_first_agent_ms": round((first_start - first_post) * 1000, 1),
        "claim_to_agent_start": summary_ms(claim_to_start),
        "agent_end_to_row_finished": summary_ms(end_to_finish),
        "slot_handover_gap_ms": {"p50": round(pct(gaps, 50) * 1000, 1), "p95": round(pct(gaps, 95) * 1000, 1)} if gaps else None,
    }


def _share_at_least(spans: list[tuple[float, float]], k: int, start: float, end: float) -> float:
    """The share of [start, end] during which at least k spans overlap (4 decimals)."""
    return round(_time_at_least(spans, k, start, end) / (end - start), 4)


def _time_at_least(spans: list[tuple[float, float]], k: int, start: float, end: float) -> float:
    """Seconds within [start, end] during which at least k spans overlap."""
    events = sorted([(max(s, start), 1) for s, e in spans if e > start] + [(min(e, end), -1) for s, e in spans if e > start])
    level, last, total = 0, start, 0.0
    for t, step in events:
        t = min(max(t, start), end)
        if level >= k:
            total += t - last
        level += step
        last = t
    return total


def _slot_gaps(spans: list[tuple[float, float]], slots: int) -> list[float]:
    """Time from an agent's end to the start of the next agent that took its place (greedy slot assignment)."""
    ends: list[float] = []
    gaps = []
    for s, e in spans:
        if len(ends) < slots:
            ends.append(e)
            continue
        ends.sort()
        earliest = ends.pop(0)
        gaps.append(max(0.0, s - earliest))
        ends.append(e)
    return gaps
