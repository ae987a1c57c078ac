"""HUB_SESSION_POLICY at the invoke endpoint, on real Postgres (Flask test client): ``reject`` answers 409
``session_busy`` and queues nothing while a job of the session is queued or running; ``interrupt`` queues the
new prompt and cancels the session's older jobs (the waiting rows at once, the running one's Job, which its
dispatcher then stops); ``enqueue`` (the default) queues behind them. The end-to-end behaviour, with the
dispatcher really stopping the run, is tests/e2e/test_session_policy_e2e.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg.rows import dict_row

from core.db import Pool
from core.sqlfiles import query
from dispatcher import claim as claims
from tests import factories as f
from tests.integration.test_invoke_endpoint import make_app
from tests.waiting import wait_until


@pytest.fixture
def apps(db_url: str) -> Iterator[dict[str, Flask]]:
    made = {policy: make_app(db_url, HUB_SESSION_POLICY=policy) for policy in ("enqueue", "reject", "interrupt")}
    yield made
    for app in made.values():
        app.extensions["pool"].close()


def client(apps: dict[str, Flask], policy: str) -> FlaskClient:
    return apps[policy].test_client()


def next_prompt(conn: psycopg.Connection, w: f.World, prompt: str = "again") -> f.World:
    """Another prompt of w's session: the user's message and a QUEUED Job, as Next.js writes them."""
    f.chat_message(conn, w.session_id, "user", prompt)
    return f.World(w.user_id, w.agent_id, w.session_id, f.job(conn, w.user_id, w.agent_id, w.session_id), prompt)


def post(c: FlaskClient, w: f.World) -> Any:
    return c.post(w.invoke_path, json=w.invoke_body())


def row(conn: psycopg.Connection, job_id: str) -> dict[str, Any] | None:
    return conn.execute("SELECT id, status::text AS status FROM agent_hub.invocation_outbox WHERE job_id = %s",
                        (job_id,)).fetchone()


def job_status(conn: psycopg.Connection, job_id: str) -> str:
    found = conn.execute('SELECT "status"::text AS s FROM "Job" WHERE "id" = %s', (job_id,)).fetchone()
    assert found is not None
    return str(found["s"])


def claim_one(pool: Pool) -> None:
    assert len(claims.claim(pool, owner="test-dispatcher", batch=1, lease_s=30)) == 1


def test_reject_answers_409_session_busy_and_queues_nothing_while_a_job_of_the_session_is_queued_or_running(
    apps: dict[str, Flask], conn: psycopg.Connection, pool: Pool
) -> None:
    c = client(apps, "reject")
    first = f.world(conn)
    assert post(c, first).status_code == 202
    second = next_prompt(conn, first)
    for state in ("pending", "running"):
        if state == "running":
            claim_one(pool)  # the first job runs now: still busy
        assert row(conn, first.job_id)["status"] == state  # type: ignore[index]
        answer = post(c, second)
        assert answer.status_code == 409, answer.get_json()
        assert answer.get_json()["error"] == "session_busy" and answer.get_json()["field"] == "sessionId"
        assert row(conn, second.job_id) is None and job_status(conn, second.job_id) == "QUEUED"
    assert post(c, first).status_code == 200  # a repeat of the busy job itself is still a repeat
    other_session = f.world(conn)  # another session of another user is not held back
    assert post(c, other_session).status_code == 202
    conn.execute("UPDATE agent_hub.invocation_outbox SET status = 'succeeded', finished_at = now(), lease_owner = NULL, "
                 "lease_expires_at = NULL WHERE job_id = %s", (first.job_id,))  # as its dispatcher finishes it
    assert post(c, second).status_code == 202  # the session is idle again


def test_enqueue_queues_behind_a_busy_session(apps: dict[str, Flask], conn: psycopg.Connection) -> None:
    c = client(apps, "enqueue")
    first = f.world(conn)
    second = next_prompt(conn, first)
    assert (post(c, first).status_code, post(c, second).status_code) == (202, 202)
    assert row(conn, first.job_id)["status"] == row(conn, second.job_id)["status"] == "pending"  # type: ignore[index]


def test_reject_decides_prompts_of_one_session_one_after_the_other(
    apps: dict[str, Flask], conn: psycopg.Connection, db_url: str
) -> None:
    # Another request of the session holds its turn (the session's lock) and queues a job meanwhile: this
    # request must wait for that to commit and then find the session busy, not slip in beside it.
    c = client(apps, "reject")
    first = f.world(conn)
    second = next_prompt(conn, first)
    answers: list[Any] = []
    with psycopg.connect(db_url, row_factory=dict_row) as other:
        other.execute(query("ingress/lock_session"), {"session_id": first.session_id})
        racer = threading.Thread(target=lambda: answers.append(post(c, second)))
        racer.start()
        wait_until(lambda: conn.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                        "AND wait_event = 'advisory'").fetchone()["n"] == 1,  # type: ignore[index]
                   what="the second request to wait for the session's turn")
        f.enqueue(other, first)
        other.commit()
    racer.join(30)
    assert answers[0].status_code == 409 and answers[0].get_json()["error"] == "session_busy"
    assert row(conn, second.job_id) is None


def test_interrupt_cancels_the_sessions_older_jobs_and_queues_the_new_prompt(
    apps: dict[str, Flask], conn: psycopg.Connection, pool: Pool, db_url: str
) -> None:
    c = client(apps, "interrupt")
    first = f.world(conn)
    assert post(c, first).status_code == 202
    claim_one(pool)  # the first job is running
    with psycopg.connect(db_url, autocommit=True) as listen:
        listen.execute("LISTEN hub_events")
        second = next_prompt(conn, first, "second")
        assert post(c, second).status_code == 202
        # The running row's Job is cancelled; the row itself stays running until its dispatcher stops it.
        assert (row(conn, first.job_id)["status"], job_status(conn, first.job_id)) == ("running", "CANCELLED")  # type: ignore[index]
        third = next_prompt(conn, first, "third")
        assert post(c, third).status_code == 202
        events = [json.loads(n.payload) for n in listen.notifies(timeout=5, stop_after=2)]
    assert (row(conn, second.job_id)["status"], job_status(conn, second.job_id)) == ("cancelled", "CANCELLED")  # type: ignore[index]
    assert (row(conn, third.job_id)["status"], job_status(conn, third.job_id)) == ("pending", "QUEUED")  # type: ignore[index]
    assert [(e["job_id"], e["status"]) for e in events] == [(first.job_id, "CANCELLED"), (second.job_id, "CANCELLED")]
    reasons = conn.execute("SELECT o.job_id, e.actor, e.reason, e.to_status::text AS to_status "
                           "FROM agent_hub.invocation_outbox_event e JOIN agent_hub.invocation_outbox o "
                           "ON o.id = e.outbox_id WHERE e.reason = 'interrupted by a newer prompt' ORDER BY e.id").fetchall()
    assert [(r["job_id"], r["actor"], r["to_status"]) for r in reasons] == [
        (first.job_id, "ingress", "running"), (second.job_id, "ingress", "cancelled")]
    message = conn.execute('SELECT "statusMessage" FROM "Job" WHERE "id" = %s', (second.job_id,)).fetchone()
    assert message["statusMessage"] == "interrupted by a newer prompt"  # type: ignore[index]
    # The feed: each cancelled Job's CANCELLED status, committed with the interrupt (same transaction id).
    fed = conn.execute("SELECT e.job_id, e.payload ->> 'status' AS status, e.xmin::text = j.xmin::text AS same_txn "
                       'FROM agent_hub.feed_event e JOIN "Job" j ON j."id" = e.job_id '
                       "WHERE e.job_id = ANY(%s) AND e.payload ->> 'status' = 'CANCELLED' ORDER BY e.id",
                       ([first.job_id, second.job_id],)).fetchall()
    assert sorted((r["job_id"], r["status"], r["same_txn"]) for r in fed) == sorted(
        [(first.job_id, "CANCELLED", True), (second.job_id, "CANCELLED", True)])


def test_interrupt_leaves_other_sessions_alone(apps: dict[str, Flask], conn: psycopg.Connection) -> None:
    c = client(apps, "interrupt")
    first, other = f.world(conn), f.world(conn)
    assert (post(c, first).status_code, post(c, other).status_code) == (202, 202)
    assert row(conn, first.job_id)["status"] == "pending"  # type: ignore[index]
