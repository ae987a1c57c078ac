"""The capped, fair claim (DISPATCHER_MAX_RUNNING_PER_USER / _PER_AGENT) on real Postgres: caps count every
dispatcher's live runs, the least-loaded user goes first, and concurrent claims cannot both take a last slot."""

from __future__ import annotations

import psycopg
import pytest

from core.db import Pool
from dispatcher import claim as claims
from tests import concurrently, factories

OWNER = "fair-owner"


def user_rows(conn: psycopg.Connection, n: int) -> list[int]:
    """n due rows of one new user and agent, each on its own session (so the session rule does not order them)."""
    first = factories.world(conn)
    ids = [factories.enqueue(conn, first)]
    for _ in range(n - 1):
        sid = factories.session(conn, first.user_id, first.agent_id)
        jid = factories.job(conn, first.user_id, first.agent_id, sid)
        w = factories.World(user_id=first.user_id, agent_id=first.agent_id, session_id=sid, job_id=jid, prompt="p")
        ids.append(factories.enqueue(conn, w))
    return ids


def take(pool: Pool, *, batch: int = 10, owner: str = OWNER, per_user: int = 0, per_agent: int = 0) -> list[int]:
    return [c.id for c in claims.claim(pool, owner=owner, batch=batch, lease_s=30, max_per_user=per_user,
                                       max_per_agent=per_agent)]


def test_a_user_cap_leaves_the_rest_of_a_backlog_queued_and_lets_another_user_in(
    conn: psycopg.Connection, pool: Pool
) -> None:
    a = user_rows(conn, 5)
    b = user_rows(conn, 1)
    assert take(pool, per_user=1) == [a[0], b[0]]
    assert take(pool, per_user=1) == []


def test_the_least_loaded_user_goes_first_then_queue_order(conn: psycopg.Connection, pool: Pool) -> None:
    a = user_rows(conn, 4)
    b = user_rows(conn, 2)
    # loads: a1=1 b1=1 a2=2 b2=2 a3=3 ...; a batch of 3 takes a1, b1, then the earlier of the two at load 2.
    assert take(pool, batch=3, per_user=3) == [a[0], a[1], b[0]]
    # with a and b at 2 running each, a cap of 3 lets one more of each in
    assert sorted(take(pool, batch=10, per_user=3)) == sorted([a[2], b[1]])


def test_caps_count_live_runs_of_every_dispatcher(conn: psycopg.Connection, pool: Pool) -> None:
    a = user_rows(conn, 3)
    assert take(pool, batch=1, owner="other-dispatcher") == [a[0]]
    assert take(pool, per_user=1) == []
    assert take(pool, per_user=2) == [a[1]]
    # an expired lease is not a live run: it no longer counts against the cap, and is itself due again first
    conn.execute("UPDATE agent_hub.invocation_outbox SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
                 (a[0],))
    assert take(pool, per_user=2) == [a[0]]
    assert take(pool, per_user=3) == [a[2]]


def test_an_agent_cap_holds_across_users(conn: psycopg.Connection, pool: Pool) -> None:
    first = factories.world(conn)
    ids = [factories.enqueue(conn, first)]
    for _ in range(3):
        other = factories.user(conn)
        sid = factories.session(conn, other, first.agent_id)
        jid = factories.job(conn, other, first.agent_id, sid)
        ids.append(factories.enqueue(conn, factories.World(other, first.agent_id, sid, jid, "p")))
    assert take(pool, per_agent=2) == ids[:2]
    assert take(pool, per_agent=2) == []


def test_without_caps_the_plain_claim_takes_the_backlog_in_queue_order(conn: psycopg.Connection, pool: Pool) -> None:
    a = user_rows(conn, 3)
    b = user_rows(conn, 1)
    assert take(pool) == a + b


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_capped_claims_never_take_a_user_past_the_cap(
    conn: psycopg.Connection, db_url: str, round_: int
) -> None:
    user_rows(conn, 12)
    results = concurrently.on_pools(db_url, 4, lambda p, n: take(p, owner=f"d{n}", per_user=2))
    taken = [i for r in results for i in r]
    assert len(taken) == 2, taken
    running = conn.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox WHERE status = 'running'").fetchone()
    assert running["n"] == 2
