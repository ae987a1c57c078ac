"""Stage 1 and 2: the queue machinery with a no-op sandbox, and wake-up latency; PgQueuer side by side.

Ours: the real ``Dispatcher`` (claim loop, run slots, ``apply_outcome``, ``WriteBack``, real SQL) with
its ``Runner`` swapped for one that returns at once after writing one message: only context loading,
bundling and Piston are skipped. ``full`` keeps the real ``Runner`` too and swaps only the Piston
sandbox for an in-process one that answers at once (context, bundle, JobLog lines and all).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench import seed
from bench.measure import CpuMeter
from core.db import Pool, make_pool
from dispatcher import claim as claims
from dispatcher.claim import Claimed
from dispatcher.config import DispatcherConfig
from dispatcher.control import RunControl
from dispatcher.outcome import Outcome
from dispatcher.sandbox.scripted import Hub, ScriptedSandbox
from dispatcher.states import OutboxStatus
from dispatcher.worker import Dispatcher
from dispatcher.writeback import WriteBack
from ingress.enqueue import enqueue
from ingress.validation import InvokeRequest


class NoopRunner:
    """Stands in for Runner: the agent 'sent' one message and exited 0, at once."""

    def __init__(self, on_start: Callable[[Claimed], None] | None = None) -> None:
        self.on_start = on_start

    def attempt(self, row: Claimed, wb: WriteBack, control: RunControl) -> Outcome:
        if self.on_start is not None:
            self.on_start(row)
        wb.message(1, "ok")
        return Outcome.finish(OutboxStatus.SUCCEEDED, None, {"wall_ms": 0})


def noop_sandbox() -> ScriptedSandbox:
    """An in-process sandbox: answers every run at once with one protocol message on stdout."""
    return ScriptedSandbox(lambda box: [Hub({"type": "message", "content": "ok"})], record=False)


def dispatcher_config(url: str, *, concurrency: int, batch: int, poll_s: float = 2.0) -> DispatcherConfig:
    return DispatcherConfig.from_env({
        "DATABASE_URL": url, "PISTON_URL": "http://127.0.0.1:9", "PISTON_TRANSPORT": "ws",
        "DISPATCHER_CONCURRENCY": str(concurrency), "DISPATCHER_BATCH_SIZE": str(batch),
        "DISPATCHER_POLL_INTERVAL_S": str(poll_s), "DISPATCHER_SHUTDOWN_GRACE_S": "5",
    })


def _start(d: Dispatcher) -> threading.Thread:
    t = threading.Thread(target=d.run_forever, name="dispatcher", daemon=True)
    t.start()
    return t


def _stop(d: Dispatcher, t: threading.Thread) -> None:
    d.request_stop()
    t.join(30)


def _count_done(url: str) -> tuple[int, int]:
    """Outbox rows succeeded, and the agent messages their sessions got (one per run)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE o.status = 'succeeded'), "
            "(SELECT count(*) FROM \"ChatMessage\" m WHERE m.\"role\" = 'agent' AND m.\"sessionId\" IN "
            "   (SELECT session_id FROM agent_hub.invocation_outbox)) "
            "FROM agent_hub.invocation_outbox o").fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def ours_drain(url: str, n: int, *, concurrency: int, batch: int, full: bool, history: int = 0) -> dict[str, Any]:
    """Queue n rows, then time the real Dispatcher draining them to SUCCEEDED.

    ``history``: finished rows already in the table (the outbox keeps them), as after weeks of traffic.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE agent_hub.invocation_outbox CASCADE")
        if history:
            conn.execute(
                "INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, session_id, user_id, prompt, status, attempts, "
                "started_at, finished_at) SELECT 'history-' || g, 'a', 'history-' || g, 'u', 'p', 'succeeded', 1, "
                "now(), now() FROM generate_series(1, %s) g", (history,))
        user_id, agent_id = seed.agent(conn, {"main.py": __file__} if full else None)
        invs = seed.invocations(conn, user_id, agent_id, n, tag="drain")
        seed.outbox_rows(conn, invs)
        conn.execute("VACUUM ANALYZE")
    cfg = dispatcher_config(url, concurrency=concurrency, batch=batch)
    d = Dispatcher(cfg, sandbox=noop_sandbox(), listen=False)
    if not full:
        d.runner = NoopRunner()  # type: ignore[assignment]
    cpu = CpuMeter(url).start()
    started = time.perf_counter()
    t = _start(d)
    deadline = started + 600
    done = 0
    while time.perf_counter() < deadline:
        time.sleep(0.02)
        if sum(d.outcomes.values()) >= n:
            break
    elapsed = time.perf_counter() - started
    cpu_us = cpu.per_job_us(n)  # before the stop: the dispatcher's backends are still there to be counted
    _stop(d, t)
    succeeded, messages = _count_done(url)
    done = succeeded - history
    if done < n or messages < n:  # a figure for a drain that did not happen would be a lie
        raise RuntimeError(f"only {done} of {n} rows succeeded, with {messages} agent messages: {d.outcomes}")
    return {
        "jobs": n, "succeeded": done, "seconds": round(elapsed, 3), "per_s": round(done / elapsed, 1),
        "concurrency": concurrency, "batch": batch, "history_rows": history, "outcomes": dict(d.outcomes),
        # writes per commit: the run slots' writes share transactions (dispatcher/groupcommit.py)
        "write_statements": d.committer.statements, "write_commits": d.committer.batches,
        **cpu_us,  # the dispatcher's threads (this process) and the Postgres server, during the drain
    }


def sql_floor(url: str, n: int, *, per_txn: int = 10) -> dict[str, Any]:
    """The dispatcher's own SQL for n no-op invocations, and nothing else: claims of 10 (with their feed
    events), then each invocation's message and finish (with its log line) and one feed insert of their
    events per transaction, ``per_txn`` invocations per transaction, from
    one connection with no Python in between but psycopg's. What the database alone allows this design,
    with the Postgres backend's CPU time per invocation (psutil, the one backend serving the loop)."""
    import psutil
    from psycopg.types.json import Jsonb

    from core import feed
    from core.db import connect
    from core.sqlfiles import query
    from dispatcher.writeback import message_id

    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute("TRUNCATE agent_hub.invocation_outbox CASCADE")
        user_id, agent_id = seed.agent(setup)
        invs = seed.invocations(setup, user_id, agent_id, n, tag="floor")
        seed.outbox_rows(setup, invs)
        setup.execute("VACUUM ANALYZE")
    conn = connect(url, autocommit=True, application_name="bench-sql-floor")
    try:
        backend = psutil.Process(conn.info.backend_pid)
        cpu0 = sum(backend.cpu_times()[:2])
        started = time.perf_counter()
        done = 0
        while True:
            rows = conn.execute(query("dispatcher/claim"),
                                {"owner": "floor", "batch": 10, "lease_s": 30, "running": [], "notify": False}).fetchall()
            if not rows:
                break
            for i in range(0, len(rows), per_txn):
                with conn.pipeline(), conn.transaction():
                    events: list[feed.FeedEvent] = []
                    for r in rows[i:i + per_txn]:
                        fence = {"outbox_id": r["id"], "owner": "floor", "attempt": r["attempts"]}
                        conn.execute(query("dispatcher/insert_message"), {
                            **fence, "id": message_id(r["job_id"], 1), "content": "ok", "session_id": r["session_id"],
                            "job_id": r["job_id"]})
                        conn.execute(query("dispatcher/finish"), {
                            **fence, "status": "succeeded", "job_status": "SUCCEEDED",
                            "result": Jsonb({"wall_ms": 0}), "error": None, "status_message": "completed",
                            "job_id": r["job_id"], "log_ids": [str(uuid.uuid4())], "log_levels": ["info"],
                            "log_messages": ["run finished: succeeded"], "log_ats": [datetime.now(UTC)]})
                        # the feed events of both writes (the message's timestamp is not read back here)
                        events += [feed.message(r["job_id"], r["session_id"], message_id=message_id(r["job_id"], 1),
                                                role="agent", content="ok", timestamp=datetime.now(UTC)),
                                   feed.log(r["job_id"], r["session_id"], level="info", message="run finished: succeeded"),
                                   feed.status(r["job_id"], r["session_id"], status="SUCCEEDED")]
                    feed.queue_events(conn, events, notify=False)
            done += len(rows)
        elapsed = time.perf_counter() - started
        backend_cpu = sum(backend.cpu_times()[:2]) - cpu0
    finally:
        conn.close()
    if done != n:
        raise RuntimeError(f"the SQL floor loop finished {done} of {n}")
    return {"jobs": n, "seconds": round(elapsed, 3), "per_s": round(n / elapsed, 1), "per_txn": per_txn,
            "postgres_cpu_us_per_invocation": round(backend_cpu / n * 1e6)}


# -- PgQueuer ---------------------------------------------------------------------------------------


async def _pgq_connect(url: str) -> Any:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver

    return AsyncpgDriver(await asyncpg.connect(dsn=url))


async def _pgq_install(url: str) -> None:
    from pgqueuer.queries import Queries

    driver = await _pgq_connect(url)
    queries = Queries(driver)
    with contextlib.suppress(Exception):  # already installed
        await queries.install()


def pgq_install(url: str) -> None:
    asyncio.run(_pgq_install(url))


async def _pgq_drain(url: str, n: int, consumers: int, batch: int) -> dict[str, Any]:
    from pgqueuer import PgQueuer, types
    from pgqueuer.queries import Queries

    queries = Queries(await _pgq_connect(url))
    await queries.clear_queue()
    await queries.clear_statistics_log()
    await queries.enqueue(["noop"] * n, [b""] * n, [0] * n)
    done = 0

    pgqs = [PgQueuer(await _pgq_connect(url)) for _ in range(consumers)]
    for pgq in pgqs:
        async def noop(job: Any) -> None:
            nonlocal done
            done += 1

        pgq.entrypoint("noop")(noop)  # PgQueuer is untyped here (make bench installs it): no decorator syntax

    started = time.perf_counter()
    await asyncio.gather(*(pgq.run(batch_size=batch, mode=types.QueueExecutionMode.drain) for pgq in pgqs))
    elapsed = time.perf_counter() - started
    return {"jobs": n, "succeeded": done, "seconds": round(elapsed, 3), "per_s": round(done / elapsed, 1),
            "consumers": consumers, "batch": batch, "driver": "asyncpg"}


def pgq_drain(url: str, n: int, *, consumers: int = 5, batch: int = 10) -> dict[str, Any]:
    """PgQueuer's own drain benchmark shape: `consumers` queue managers, one connection each, batch 10."""
    import uvloop

    result: dict[str, Any] = uvloop.run(_pgq_drain(url, n, consumers, batch))
    return result


# -- wake-up latency --------------------------------------------------------------------------------


def ours_wakeup(url: str, n: int, *, listen: bool, poll_s: float, gap_s: float = 0.003) -> dict[str, Any]:
    """Commit of the real ingress transaction (lookup + outbox insert + NOTIFY) -> the claim that took the row.

    One invocation at a time (low load): the next is posted once the previous was claimed, plus a gap.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE agent_hub.invocation_outbox CASCADE")
        user_id, agent_id = seed.agent(conn)
        invs = seed.invocations(conn, user_id, agent_id, n, tag="wake")
        conn.execute("VACUUM ANALYZE")
    claimed_at: dict[str, float] = {}
    claimed = threading.Event()
    real_claim = claims.claim

    def timed_claim(pool: Pool, **kw: Any) -> list[Claimed]:
        rows = real_claim(pool, **kw)
        now = time.perf_counter()
        for r in rows:
            claimed_at[r.job_id] = now
        if rows:
            claimed.set()
        return rows

    cfg = dispatcher_config(url, concurrency=4, batch=4, poll_s=poll_s)
    d = Dispatcher(cfg, listen=listen)
    d.runner = NoopRunner()  # type: ignore[assignment]
    claims.claim = timed_claim  # the Dispatcher calls it through the module
    ingress_pool = make_pool(url, min_size=1, max_size=1, timeout_s=5, statement_timeout_ms=5000,
                             application_name="bench-ingress")
    ingress_pool.open(wait=True)
    t = _start(d)
    time.sleep(0.5)  # the listener connects and the first sweep runs
    committed_at: dict[str, float] = {}
    try:
        for inv in invs:
            req = InvokeRequest(agent_id=inv.agent_id, job_id=inv.job_id, session_id=inv.session_id,
                                user_id=inv.user_id, prompt=inv.prompt)
            claimed.clear()
            enqueue(ingress_pool, req, max_attempts=5)
            committed_at[inv.job_id] = time.perf_counter()
            if not claimed.wait(poll_s * 3 + 5):
                raise RuntimeError("an invocation was not claimed in time")
            time.sleep(gap_s)
    finally:
        claims.claim = real_claim
        _stop(d, t)
        ingress_pool.close()
    lat = [claimed_at[j] - committed_at[j] for j in committed_at]
    from bench.measure import summary_ms

    return {**summary_ms(lat), "listen": listen, "poll_interval_s": poll_s}


async def _pgq_wakeup(url: str, n: int, gap_s: float) -> dict[str, Any]:
    from pgqueuer import PgQueuer
    from pgqueuer.queries import Queries

    from bench.measure import summary_ms

    producer = Queries(await _pgq_connect(url))
    await producer.clear_queue()
    pgq = PgQueuer(await _pgq_connect(url))
    got = asyncio.Event()
    at: dict[int, float] = {}

    async def wake(job: Any) -> None:
        at[int(job.payload.decode())] = time.perf_counter()
        got.set()

    pgq.entrypoint("wake")(wake)

    runner = asyncio.create_task(pgq.run(dequeue_timeout=timedelta(seconds=30)))
    await asyncio.sleep(0.5)
    committed: dict[int, float] = {}
    for i in range(n):
        got.clear()
        await producer.enqueue("wake", str(i).encode())  # one autocommit INSERT (+ its NOTIFY trigger)
        committed[i] = time.perf_counter()
        await asyncio.wait_for(got.wait(), 10)
        await asyncio.sleep(gap_s)
    pgq.shutdown.set()
    await asyncio.wait_for(runner, 30)
    return {**summary_ms([at[i] - committed[i] for i in committed]), "driver": "asyncpg"}


def pgq_wakeup(url: str, n: int, gap_s: float = 0.003) -> dict[str, Any]:
    import uvloop

    result: dict[str, Any] = uvloop.run(_pgq_wakeup(url, n, gap_s))
    return result
