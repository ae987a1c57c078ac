"""Rows in the Prisma tables, written the way Prisma writes them (TEXT uuid ids, updatedAt set)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class World:
    """A user, an agent, a session with the user's prompt, and a QUEUED invocation Job."""

    user_id: str
    agent_id: str
    session_id: str
    job_id: str
    prompt: str

    def invoke_body(self) -> dict[str, str]:
        """Exactly the body the Next.js route posts."""
        return {"sessionId": self.session_id, "jobId": self.job_id, "userId": self.user_id, "prompt": self.prompt}

    @property
    def invoke_path(self) -> str:
        return f"/api/agents/{self.agent_id}/invoke"

    def enqueue_params(self, max_attempts: int = 5) -> dict[str, object]:
        """The parameters of sql/queries/ingress/enqueue.sql for this invocation (the ingress' own)."""
        from ingress.enqueue import params
        from ingress.validation import InvokeRequest

        req = InvokeRequest(agent_id=self.agent_id, job_id=self.job_id, session_id=self.session_id,
                            user_id=self.user_id, prompt=self.prompt)
        return params(req, max_attempts=max_attempts)


def enqueue(conn: psycopg.Connection, w: World) -> int:
    """Queue w's invocation with the ingress's own SQL (outbox row + NOTIFY); returns the row id."""
    from core.sqlfiles import query

    row = conn.execute(query("ingress/enqueue"), w.enqueue_params()).fetchone()
    assert row is not None and row["id"] is not None, row
    return int(row["id"])


def user(conn: psycopg.Connection, name: str = "Ada") -> str:
    uid = new_id()
    conn.execute(
        'INSERT INTO "User" ("id", "clerkId", "name", "email", "updatedAt") VALUES (%s, %s, %s, %s, CURRENT_TIMESTAMP)',
        (uid, f"clerk_{uid}", name, f"{uid}@example.test"),
    )
    return uid


def agent(conn: psycopg.Connection, creator_id: str, name: str = "echo", version: str = "1.0.0") -> str:
    aid = new_id()
    conn.execute(
        'INSERT INTO "Agent" ("id", "name", "description", "version", "updatedAt", "creatorId") '
        "VALUES (%s, %s, %s, %s, CURRENT_TIMESTAMP, %s)",
        (aid, name, f"{name} agent", version, creator_id),
    )
    return aid


def agent_file(conn: psycopg.Connection, agent_id: str, filename: str, filepath: str, size: int = 0) -> str:
    fid = new_id()
    conn.execute(
        'INSERT INTO "AgentFile" ("id", "filename", "filepath", "filesize", "mimetype", "agentId") '
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (fid, filename, filepath, size, "text/x-python", agent_id),
    )
    return fid


def env_var(conn: psycopg.Connection, agent_id: str, key: str, value: str) -> None:
    conn.execute(
        'INSERT INTO "AgentEnvVar" ("id", "key", "value", "updatedAt", "agentId") VALUES (%s, %s, %s, CURRENT_TIMESTAMP, %s)',
        (new_id(), key, value, agent_id),
    )


def session(conn: psycopg.Connection, user_id: str, agent_id: str) -> str:
    sid = new_id()
    conn.execute('INSERT INTO "Session" ("id", "userId", "agentId") VALUES (%s, %s, %s)', (sid, user_id, agent_id))
    return sid


def user_var(conn: psycopg.Connection, session_id: str, key: str, value: str) -> None:
    conn.execute(
        'INSERT INTO "UserVariable" ("id", "key", "value", "updatedAt", "sessionId") VALUES (%s, %s, %s, CURRENT_TIMESTAMP, %s)',
        (new_id(), key, value, session_id),
    )


def chat_message(conn: psycopg.Connection, session_id: str, role: str, content: str) -> str:
    mid = new_id()
    conn.execute(
        'INSERT INTO "ChatMessage" ("id", "role", "content", "sessionId") VALUES (%s, %s, %s, %s)',
        (mid, role, content, session_id),
    )
    return mid


def job(
    conn: psycopg.Connection,
    user_id: str,
    agent_id: str | None,
    session_id: str | None,
    *,
    type_: str = "AGENT_INVOCATION",
    status: str = "QUEUED",
) -> str:
    jid = new_id()
    conn.execute(
        'INSERT INTO "Job" ("id", "type", "status", "userId", "agentId", "sessionId") '
        "VALUES (%s, %s::\"JobType\", %s::\"JobStatus\", %s, %s, %s)",
        (jid, type_, status, user_id, agent_id, session_id),
    )
    return jid


def world(conn: psycopg.Connection, prompt: str = "hello agent") -> World:
    """What the Next.js route has written by the time it POSTs to us."""
    uid = user(conn)
    aid = agent(conn, uid)
    sid = session(conn, uid, aid)
    chat_message(conn, sid, "user", prompt)
    jid = job(conn, uid, aid, sid)
    return World(user_id=uid, agent_id=aid, session_id=sid, job_id=jid, prompt=prompt)


def next_turn(conn: psycopg.Connection, w: World, prompt: str) -> World:
    """A follow-up prompt on the same session: a new user message and a new Job."""
    chat_message(conn, w.session_id, "user", prompt)
    jid = job(conn, w.user_id, w.agent_id, w.session_id)
    return World(user_id=w.user_id, agent_id=w.agent_id, session_id=w.session_id, job_id=jid, prompt=prompt)
