"""INGRESS_RATE_PER_USER at the invoke endpoint, on real Postgres (Flask test client): past the rate a user's
prompt is answered 429 ``rate_limited`` with ``Retry-After`` and nothing is queued; other users are not held
back; the window slides; prompts sent at once are counted one after the other."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from psycopg.rows import dict_row

from core.sqlfiles import query
from tests import factories as f
from tests.integration.test_invoke_endpoint import make_app
from tests.waiting import wait_until


@pytest.fixture
def app(db_url: str) -> Iterator[Flask]:
    made = make_app(db_url, INGRESS_RATE_PER_USER="2/min")
    yield made
    made.extensions["pool"].close()


def prompt_of(conn: psycopg.Connection, w: f.World) -> f.World:
    """Another chat (session) of w's user with w's agent, with its prompt and QUEUED Job."""
    sid = f.session(conn, w.user_id, w.agent_id)
    f.chat_message(conn, sid, "user", "p")
    return f.World(w.user_id, w.agent_id, sid, f.job(conn, w.user_id, w.agent_id, sid), "p")


def queued(conn: psycopg.Connection, job_id: str) -> bool:
    return conn.execute("SELECT 1 FROM agent_hub.invocation_outbox WHERE job_id = %s", (job_id,)).fetchone() is not None


def test_past_the_rate_a_users_prompt_gets_429_with_retry_after_and_nothing_is_queued(
    app: Flask, conn: psycopg.Connection
) -> None:
    c = app.test_client()
    first = f.world(conn)
    second, third = prompt_of(conn, first), prompt_of(conn, first)
    assert [c.post(w.invoke_path, json=w.invoke_body()).status_code for w in (first, second)] == [202, 202]
    answer = c.post(third.invoke_path, json=third.invoke_body())
    assert answer.status_code == 429 and answer.get_json()["error"] == "rate_limited", answer.get_json()
    assert 1 <= int(answer.headers["Retry-After"]) <= 60
    assert not queued(conn, third.job_id)
    assert c.post(first.invoke_path, json=first.invoke_body()).status_code == 200  # a repeat is not a new prompt
    other = f.world(conn)  # another user
    assert c.post(other.invoke_path, json=other.invoke_body()).status_code == 202
    # The window slides: once the first two are older than a minute, the third goes through.
    conn.execute("UPDATE agent_hub.invocation_outbox SET created_at = created_at - interval '61 seconds' "
                 "WHERE user_id = %s", (first.user_id,))
    assert c.post(third.invoke_path, json=third.invoke_body()).status_code == 202


def test_a_users_prompts_sent_at_once_are_counted_one_after_the_other(
    app: Flask, conn: psycopg.Connection, db_url: str
) -> None:
    c = app.test_client()
    first = f.world(conn)
    assert c.post(first.invoke_path, json=first.invoke_body()).status_code == 202
    second, third = prompt_of(conn, first), prompt_of(conn, first)
    answers: list[Any] = []
    with psycopg.connect(db_url, row_factory=dict_row) as other:
        other.execute(query("ingress/lock_user"), {"user_id": first.user_id})  # another request's turn
        racer = threading.Thread(target=lambda: answers.append(c.post(third.invoke_path, json=third.invoke_body())))
        racer.start()
        wait_until(lambda: conn.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                        "AND wait_event = 'advisory'").fetchone()["n"] == 1,  # type: ignore[index]
                   what="the request to wait for the user's turn")
        f.enqueue(other, second)  # the other request queues the user's second prompt meanwhile
        other.commit()
    racer.join(30)
    assert answers[0].status_code == 429
    assert not queued(conn, third.job_id)
