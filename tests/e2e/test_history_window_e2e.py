"""End to end: the chat history an agent sees is windowed to the newest messages, oldest first: at most
HISTORY_MAX_MESSAGES read, then as many as fit in Piston's request limit; the Job's JobLog says so and why."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dispatcher import bundle
from tests import factories
from tests.stack import Stack, agent_with_code

AGENT = "import json, hub\nhub.send_message(json.dumps([m['role'] + ':' + m['content'] for m in hub.get_chat_history()]))\n"


def body_limit() -> int:
    """The box's files with no history (hub.py's size changes as the SDK grows), plus 30 kB: room for the
    6 kB prompt, the request's overhead and about three of the 6 kB messages, never all five."""
    built = bundle.build_files({"chat_history": []}, [bundle.AgentSource("main.py", AGENT)], max_body_bytes=10**7)
    return bundle.body_size(built.files) + 30_000


BODY_LIMIT = body_limit()


@pytest.fixture(scope="module")
def stack(module_db_url: str) -> Iterator[Stack]:
    s = Stack(module_db_url, dispatcher_env={"HISTORY_MAX_MESSAGES": "5", "PISTON_MAX_BODY_BYTES": str(BODY_LIMIT)})
    yield s.start()
    s.close()


def older_message(conn: psycopg.Connection, session_id: str, role: str, content: str, seconds_ago: int) -> None:
    """A message written earlier (explicit timestamps: the order must not hang on same-millisecond ties)."""
    conn.execute('INSERT INTO "ChatMessage" ("id", "role", "content", "sessionId", "timestamp") '
                 "VALUES (%s, %s, %s, %s, CURRENT_TIMESTAMP - make_interval(secs => %s))",
                 (factories.new_id(), role, content, session_id, seconds_ago))


def session_of_12(conn: psycopg.Connection, tmp: Path, size: int) -> factories.World:
    """m1 … m11 alternating agent/user, then the user's prompt m12 (Next.js's, the newest); each `size` long."""
    w = agent_with_code(conn, tmp, AGENT, prompt="m12".ljust(size, "."))
    for i in range(1, 12):
        older_message(conn, w.session_id, "agent" if i % 2 else "user", f"m{i}".ljust(size, "."), seconds_ago=60 - i)
    return w


def run(stack: Stack, w: factories.World) -> tuple[list[str], list[str]]:
    """What the agent saw (role:name of each message) and the Job's 'chat history windowed' lines."""
    assert stack.post(w).status_code == 202
    job = stack.wait_job(w.job_id)
    assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
    [seen] = [json.loads(m) for m in stack.messages(w.session_id)[-1:]]
    windowed = [e["message"] for e in stack.job_logs(w.job_id) if e["message"].startswith("chat history windowed")]
    return [m.rstrip(".") for m in seen], windowed


def test_the_agent_sees_only_the_newest_history_max_messages_in_order_and_the_joblog_says_so(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    seen, windowed = run(stack, session_of_12(hub_conn, tmp_path, size=3))
    assert seen == ["user:m8", "agent:m9", "user:m10", "agent:m11", "user:m12"]
    assert windowed == ["chat history windowed: the agent sees the newest 5 of 12 messages (HISTORY_MAX_MESSAGES is 5)"]


def test_history_over_pistons_request_limit_keeps_the_newest_that_fit_and_the_joblog_names_both_causes(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    seen, windowed = run(stack, session_of_12(hub_conn, tmp_path, size=6_000))
    newest = ["user:m8", "agent:m9", "user:m10", "agent:m11", "user:m12"]
    assert 0 < len(seen) < 5 and seen == newest[5 - len(seen):], seen
    assert windowed == [f"chat history windowed: the agent sees the newest {len(seen)} of 12 messages "
                        f"(HISTORY_MAX_MESSAGES is 5; Piston's request limit is {BODY_LIMIT} bytes)"]
