"""The fair anchor (issue 18): PgQueuer in the hub's own database, its entrypoint doing the hub's writes.

What a user would build instead of this service: PgQueuer installed beside the Prisma tables, a job per
invocation, and an entrypoint that does what our dispatcher does for a no-op agent, committed as a
handler naturally would, one ``await`` at a time:

1. ``Job`` -> ``PROCESSING`` (commit: the hub sees the run start);
2. one agent ``ChatMessage`` (commit: the hub sees it before the end);
3. a ``JobLog`` line and ``Job`` -> ``SUCCEEDED``, in one transaction (commit).

With ``feed=True`` (the headline since session 6) each of the three transactions also appends the feed
events this service appends for the same change (issue 20's durable feed, agent_hub.feed_event): the
``status`` PROCESSING event; the ``message`` event; the ``log`` event of the JobLog line and the ``status``
SUCCEEDED event. A handler would write them as our web and ops code does: one feed insert
(sql/queries/feed/insert.sql, the very statement) last in each transaction, NOTIFYing with its commit.
``feed=False`` is the anchor as session 3 defined it, before the service wrote a feed: kept as context.

The statements are written as Prisma's query engine writes them (quoted, schema-qualified names, TEXT
ids made by the client, timestamps bound by the client, ``RETURNING`` every scalar column). None of
``Job``, ``ChatMessage`` and ``JobLog`` has an ``@updatedAt`` field in the contract's schema, so there
is none to set. With ``context=True`` the entrypoint first reads the run's context (env vars, user vars,
history, files) in one query, to set beside our full runner.

In flight: one queue manager (one worker, as one dispatcher process) holding at most N picked jobs
(``max_concurrent_tasks``, PgQueuer's hard cap per worker, enforced in its dequeue query) for our N run
slots, dequeuing 10 at a time as our claim does (5 at N=10: PgQueuer requires the cap to be at least
twice the batch); the handlers share an asyncpg pool with one connection per job in flight.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench import seed
from bench.measure import CpuMeter
from core import feed as feeds
from core.sqlfiles import query

ENTRYPOINT = "hub"
BATCH = 10  # jobs per dequeue, as our claim's DISPATCHER_BATCH_SIZE
HISTORY_LIMIT = 500  # HISTORY_MAX_MESSAGES' default, as our runner reads it

_JOB_COLUMNS = ", ".join(
    f'"public"."Job"."{c}"' + ("::text" if c in ("type", "status") else "")
    for c in ("id", "type", "status", "progress", "statusMessage", "errorMessage", "createdAt", "startedAt",
              "completedAt", "userId", "agentId", "datasetId", "modelId", "sessionId"))

# prisma.job.update({ where: { id }, data: { status: 'PROCESSING', startedAt: new Date(), statusMessage: 'running' } })
JOB_PROCESSING = (
    'UPDATE "public"."Job" SET "status" = CAST($1::text AS "public"."JobStatus"), "startedAt" = $2, '
    f'"statusMessage" = $3 WHERE ("public"."Job"."id" = $4 AND 1=1) RETURNING {_JOB_COLUMNS}')

# prisma.chatMessage.create({ data: { role: 'agent', content, sessionId } }): id and timestamp from the client
MESSAGE = (
    'INSERT INTO "public"."ChatMessage" ("id","role","content","timestamp","sessionId") VALUES ($1,$2,$3,$4,$5) '
    'RETURNING "public"."ChatMessage"."id", "public"."ChatMessage"."role", "public"."ChatMessage"."content", '
    '"public"."ChatMessage"."timestamp", "public"."ChatMessage"."sessionId"')

# prisma.$transaction([prisma.jobLog.create(...), prisma.job.update(...)])
JOB_LOG = (
    'INSERT INTO "public"."JobLog" ("id","level","message","timestamp","jobId") VALUES ($1,$2,$3,$4,$5) '
    'RETURNING "public"."JobLog"."id", "public"."JobLog"."level", "public"."JobLog"."message", '
    '"public"."JobLog"."timestamp", "public"."JobLog"."jobId"')
JOB_SUCCEEDED = (
    'UPDATE "public"."Job" SET "status" = CAST($1::text AS "public"."JobStatus"), "progress" = $2, '
    f'"statusMessage" = $3, "completedAt" = $4 WHERE ("public"."Job"."id" = $5 AND 1=1) RETURNING {_JOB_COLUMNS}')

# The run's context in one query: what our runner reads (sql/queries/dispatcher/context.sql), as a user
# who wanted one round trip would write it.
CONTEXT = """
SELECT a."id", a."name", a."version",
       (SELECT coalesce(json_object_agg(e."key", e."value"), '{}'::json)
          FROM "public"."AgentEnvVar" e WHERE e."agentId" = a."id") AS env_vars,
       (SELECT coalesce(json_object_agg(u."key", u."value"), '{}'::json)
          FROM "public"."UserVariable" u WHERE u."sessionId" = $2) AS user_vars,
       (SELECT coalesce(json_agg(json_build_object('role', h."role", 'content', h."content", 'timestamp', h."timestamp")
                                 ORDER BY h."timestamp", h."id"), '[]'::json)
          FROM (SELECT m."id", m."role", m."content", m."timestamp" FROM "public"."ChatMessage" m
                 WHERE m."sessionId" = $2 ORDER BY m."timestamp" DESC, m."id" DESC LIMIT $3) h) AS history,
       (SELECT coalesce(json_agg(json_build_object('filename', f."filename", 'filepath', f."filepath",
                                                   'filesize', f."filesize") ORDER BY f."createdAt", f."id"), '[]'::json)
          FROM "public"."AgentFile" f WHERE f."agentId" = a."id") AS files
FROM "public"."Agent" a WHERE a."id" = $1
"""


def _numbered(sql: str) -> str:
    """psycopg's ``%(name)s`` placeholders as asyncpg's ``$n``, numbered in order of first use."""
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, sql)


# feed/insert.sql's parameters in order: job_ids, session_ids, kinds, payloads, notify
FEED = _numbered(query("feed/insert"))


def _feed_args(events: list[feeds.FeedEvent]) -> tuple[list[str], list[str | None], list[str], list[str], bool]:
    return ([e.job_id for e in events], [e.session_id for e in events], [str(e.kind) for e in events],
            [e.data() for e in events], True)


def _now() -> datetime:
    """What Prisma binds for ``new Date()`` / ``@default(now())`` into a TIMESTAMP(3): UTC, milliseconds."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


async def _drain(url: str, invs: list[seed.Invocation], in_flight: int, context: bool, feed: bool) -> dict[str, Any]:
    import asyncpg
    from pgqueuer import PgQueuer, types
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    queries = Queries(AsyncpgDriver(await asyncpg.connect(dsn=url)))
    await queries.clear_queue()
    await queries.clear_statistics_log()
    payloads = [json.dumps({"jobId": i.job_id, "sessionId": i.session_id, "agentId": i.agent_id}).encode()
                for i in invs]
    await queries.enqueue([ENTRYPOINT] * len(invs), payloads, [0] * len(invs))

    pool = await asyncpg.create_pool(dsn=url, min_size=in_flight, max_size=in_flight)
    done = 0
    last = 0.0
    peak = 0
    busy = 0

    async def handle(job: Any) -> None:
        nonlocal done, last, peak, busy
        busy += 1
        peak = max(peak, busy)
        p = json.loads(job.payload)
        async with pool.acquire() as conn:
            if context:
                ctx = await conn.fetchrow(CONTEXT, p["agentId"], p["sessionId"], HISTORY_LIMIT)
                json.loads(ctx["history"])  # what a handler would do with it: decode it
            job_id, session_id = p["jobId"], p["sessionId"]
            if not feed:
                await conn.fetchrow(JOB_PROCESSING, "PROCESSING", _now(), "running", job_id)
                await conn.fetchrow(MESSAGE, str(uuid.uuid4()), "agent", "ok", _now(), session_id)
                async with conn.transaction():
                    await conn.fetchrow(JOB_LOG, str(uuid.uuid4()), "info", "run finished: succeeded", _now(), job_id)
                    await conn.fetchrow(JOB_SUCCEEDED, "SUCCEEDED", 100.0, "completed", _now(), job_id)
            else:
                async with conn.transaction():
                    await conn.fetchrow(JOB_PROCESSING, "PROCESSING", _now(), "running", job_id)
                    await conn.fetchrow(FEED, *_feed_args([feeds.status(job_id, session_id, status="PROCESSING")]))
                async with conn.transaction():
                    m = await conn.fetchrow(MESSAGE, str(uuid.uuid4()), "agent", "ok", _now(), session_id)
                    await conn.fetchrow(FEED, *_feed_args([feeds.message(
                        job_id, session_id, message_id=m["id"], role="agent", content="ok", timestamp=m["timestamp"])]))
                async with conn.transaction():
                    line = await conn.fetchrow(JOB_LOG, str(uuid.uuid4()), "info", "run finished: succeeded", _now(), job_id)
                    await conn.fetchrow(JOB_SUCCEEDED, "SUCCEEDED", 100.0, "completed", _now(), job_id)
                    await conn.fetchrow(FEED, *_feed_args([
                        feeds.log(job_id, session_id, level="info", message=line["message"]),
                        feeds.status(job_id, session_id, status="SUCCEEDED")]))
        busy -= 1
        done += 1
        last = time.perf_counter()

    pgq = PgQueuer(AsyncpgDriver(await asyncpg.connect(dsn=url)))
    pgq.entrypoint(ENTRYPOINT)(handle)  # PgQueuer is untyped here (make bench installs it): no decorator syntax
    batch = min(BATCH, in_flight // 2)  # PgQueuer requires max_concurrent_tasks >= 2 x batch
    cpu = CpuMeter(url).start()  # blocking, before the clock starts
    started = time.perf_counter()
    try:
        await pgq.run(batch_size=batch, max_concurrent_tasks=in_flight, mode=types.QueueExecutionMode.drain)
        # PgQueuer and its handlers (this process), and the Postgres server, while every connection is open
        cpu_us = cpu.per_job_us(len(invs))
    finally:
        await pool.close()
    elapsed = last - started
    return {**cpu_us, "jobs": len(invs), "succeeded": done, "seconds": round(elapsed, 3), "per_s": round(done / elapsed, 1),
            "in_flight": in_flight, "queue_managers": 1, "batch": batch, "max_concurrent_tasks": in_flight,
            "peak_handlers_running": peak, "context_read": context, "feed": feed, "driver": "asyncpg", "commits_per_job": 3}


def drain(url: str, n: int, *, in_flight: int, context: bool = False, feed: bool = True) -> dict[str, Any]:
    """Seed n QUEUED Jobs (as Next.js writes them), queue one PgQueuer job each, time the drain and check
    the hub's tables say every one SUCCEEDED with its message and log line."""
    import uvloop

    with psycopg.connect(url, autocommit=True) as conn:
        user_id, agent_id = seed.agent(conn, {"main.py": __file__} if context else None)
        invs = seed.invocations(conn, user_id, agent_id, n, tag="pgq-hub")
        conn.execute("VACUUM ANALYZE")
    result: dict[str, Any] = uvloop.run(_drain(url, invs, in_flight, context, feed))
    with psycopg.connect(url) as conn:
        row = conn.execute(
            'SELECT count(*) FILTER (WHERE j."status" = \'SUCCEEDED\' AND j."startedAt" IS NOT NULL), '
            '(SELECT count(*) FROM "ChatMessage" m JOIN "Job" k ON k."sessionId" = m."sessionId" '
            "  WHERE k.\"agentId\" = %(a)s AND m.\"role\" = 'agent'), "
            '(SELECT count(*) FROM "JobLog" l JOIN "Job" k ON k."id" = l."jobId" WHERE k."agentId" = %(a)s), '
            '(SELECT count(*) FROM agent_hub.feed_event f JOIN "Job" k ON k."id" = f.job_id WHERE k."agentId" = %(a)s) '
            'FROM "Job" j WHERE j."agentId" = %(a)s', {"a": agent_id}).fetchone()
    got = tuple(row) if row else (0, 0, 0, 0)
    if got != (n, n, n, 4 * n if feed else 0):  # a figure for a drain that did not happen would be a lie
        raise RuntimeError(f"PgQueuer hub drain of {n}: (Jobs SUCCEEDED, messages, log lines, feed events) = {got}")
    return result
