"""Bulk rows for the benchmarks: Prisma rows written in a few set-based statements, not one by one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, TypeAlias

import psycopg

from core import migrate

# Seeding reads nothing back: a connection of any row factory will do.
AnyConn: TypeAlias = psycopg.Connection[Any]


@dataclass(frozen=True)
class Invocation:
    """What Next.js posts for one invocation (each has its own QUEUED Job and session)."""

    agent_id: str
    session_id: str
    job_id: str
    user_id: str
    prompt: str

    @property
    def path(self) -> str:
        return f"/api/agents/{self.agent_id}/invoke"

    def body(self) -> dict[str, str]:
        return {"sessionId": self.session_id, "jobId": self.job_id, "userId": self.user_id, "prompt": self.prompt}


def migrated(url: str) -> str:
    with open("/dev/null", "w") as devnull:
        migrate.apply(url, prisma=True, out=devnull)
    return url


def agent(conn: AnyConn, files: dict[str, str] | None = None) -> tuple[str, str]:
    """A user and an agent whose files are (filename -> absolute path); returns (user id, agent id)."""
    user_id, agent_id = str(uuid.uuid4()), str(uuid.uuid4())
    conn.execute(
        'INSERT INTO "User" ("id", "clerkId", "name", "email", "updatedAt") VALUES (%s, %s, %s, %s, CURRENT_TIMESTAMP)',
        (user_id, f"clerk_{user_id}", "Bench", f"{user_id}@example.test"),
    )
    conn.execute(
        'INSERT INTO "Agent" ("id", "name", "description", "version", "updatedAt", "creatorId") '
        "VALUES (%s, 'bench', 'bench agent', '1.0.0', CURRENT_TIMESTAMP, %s)",
        (agent_id, user_id),
    )
    for filename, path in (files or {}).items():
        conn.execute(
            'INSERT INTO "AgentFile" ("id", "filename", "filepath", "filesize", "mimetype", "agentId") '
            "VALUES (%s, %s, %s, 0, 'text/x-python', %s)",
            (str(uuid.uuid4()), filename, path, agent_id),
        )
    return user_id, agent_id


def invocations(conn: AnyConn, user_id: str, agent_id: str, n: int, *, tag: str) -> list[Invocation]:
    """n sessions, each with the user's prompt message and one QUEUED Job (what Next.js writes before it POSTs)."""
    prefix = f"{tag}-{uuid.uuid4().hex[:8]}"
    params = {"n": n, "p": prefix, "u": user_id, "a": agent_id}
    conn.execute(
        'INSERT INTO "Session" ("id", "userId", "agentId") '
        "SELECT %(p)s || '-s-' || g, %(u)s, %(a)s FROM generate_series(1, %(n)s) g", params)
    conn.execute(
        'INSERT INTO "ChatMessage" ("id", "role", "content", "sessionId") '
        "SELECT %(p)s || '-m-' || g, 'user', 'hello', %(p)s || '-s-' || g FROM generate_series(1, %(n)s) g", params)
    conn.execute(
        'INSERT INTO "Job" ("id", "type", "status", "userId", "agentId", "sessionId") '
        "SELECT %(p)s || '-j-' || g, 'AGENT_INVOCATION', 'QUEUED', %(u)s, %(a)s, %(p)s || '-s-' || g "
        "FROM generate_series(1, %(n)s) g", params)
    return [Invocation(agent_id, f"{prefix}-s-{i}", f"{prefix}-j-{i}", user_id, "hello") for i in range(1, n + 1)]


def outbox_rows(conn: AnyConn, invs: list[Invocation]) -> None:
    """Queue the invocations as the ingress would (one outbox row each), in one statement."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, session_id, user_id, prompt) VALUES (%s, %s, %s, %s, %s)",
            [(i.job_id, i.agent_id, i.session_id, i.user_id, i.prompt) for i in invs],
        )
