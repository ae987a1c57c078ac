"""Schedules on real Postgres: what add refuses, what a firing writes (as Next.js would), exactly one run per due
time with several dispatchers, one catch-up run after downtime, pausing when the agent is gone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from core.db import Pool
from dispatcher import schedule_store
from dispatcher.schedule_store import NewSchedule
from dispatcher.schedules import ScheduleError, Timing
from tests import concurrently
from tests import factories as f


@pytest.fixture
def owners(conn: psycopg.Connection) -> tuple[str, str]:
    uid = f.user(conn)
    return uid, f.agent(conn, uid)


def add(conn: psycopg.Connection, owners: tuple[str, str], *, every_s: int = 10, session: str = "new",
        prompt: str = "daily digest") -> int:
    uid, aid = owners
    sid, _ = schedule_store.add(conn, NewSchedule(agent_id=aid, user_id=uid, prompt=prompt,
                                                  timing=Timing(every_s=every_s), session=session))
    return sid


def make_due(conn: psycopg.Connection, sid: int, ago_s: float = 0.0) -> datetime:
    row = conn.execute("UPDATE agent_hub.schedule SET next_due_at = now() - make_interval(secs => %s) "
                       "WHERE id = %s RETURNING next_due_at", (ago_s, sid)).fetchone()
    return row["next_due_at"]


def schedule_row(conn: psycopg.Connection, sid: int) -> dict:
    return conn.execute("SELECT * FROM agent_hub.schedule WHERE id = %s", (sid,)).fetchone()


def test_add_refuses_an_unknown_agent_user_or_someone_elses_session(conn: psycopg.Connection, owners: tuple) -> None:
    uid, aid = owners
    other = f.world(conn)
    cases = [
        (NewSchedule("nope", uid, "p", Timing(every_s=10), "new"), "--agent: no agent 'nope'"),
        (NewSchedule(aid, "nobody", "p", Timing(every_s=10), "new"), "--user: no user 'nobody'"),
        (NewSchedule(aid, uid, "p", Timing(every_s=10), "missing-session"), "--session: no session"),
        (NewSchedule(aid, uid, "p", Timing(every_s=10), other.session_id), "is not this user's chat"),
        (NewSchedule(aid, uid, "  ", Timing(every_s=10), "new"), "--prompt must not be empty"),
    ]
    for new, message in cases:
        with pytest.raises(ScheduleError, match=message):
            schedule_store.add(conn, new)
    assert conn.execute("SELECT count(*) AS n FROM agent_hub.schedule").fetchone()["n"] == 0


def test_the_first_due_time_is_one_interval_or_the_next_cron_tick_away(conn: psycopg.Connection, owners: tuple) -> None:
    uid, aid = owners
    now = datetime.now(UTC)
    _, first = schedule_store.add(conn, NewSchedule(aid, uid, "p", Timing(every_s=30), "new"), now=now)
    assert first == now + timedelta(seconds=30)
    _, tick = schedule_store.add(conn, NewSchedule(aid, uid, "p", Timing(cron="0 9 * * *", tz="Asia/Tokyo"), "new"),
                                 now=now)
    assert tick > now and tick.astimezone(UTC).hour == 0 and tick.minute == 0  # 09:00 in Tokyo is 00:00 UTC


def test_a_firing_writes_session_message_job_and_outbox_row_as_nextjs_would(
    conn: psycopg.Connection, pool: Pool, owners: tuple
) -> None:
    uid, aid = owners
    sid = add(conn, owners, prompt="what changed today?")
    due = make_due(conn, sid)
    conn.execute("LISTEN invocation_outbox")
    fired = schedule_store.fire_due(pool, max_attempts=3)
    assert len(fired) == 1 and fired[0].schedule_id == sid and fired[0].paused_reason is None
    job = conn.execute('SELECT * FROM "Job" WHERE "id" = %s', (fired[0].job_id,)).fetchone()
    assert (job["type"], job["status"], job["userId"], job["agentId"]) == ("AGENT_INVOCATION", "QUEUED", uid, aid)
    session = conn.execute('SELECT * FROM "Session" WHERE "id" = %s', (job["sessionId"],)).fetchone()
    assert (session["userId"], session["agentId"], session["endedAt"]) == (uid, aid, None)
    msgs = conn.execute('SELECT "role", "content" FROM "ChatMessage" WHERE "sessionId" = %s', (job["sessionId"],)).fetchall()
    assert msgs == [{"role": "user", "content": "what changed today?"}]
    row = conn.execute("SELECT * FROM agent_hub.invocation_outbox WHERE id = %s", (fired[0].outbox_id,)).fetchone()
    assert (row["job_id"], row["session_id"], row["user_id"], row["agent_id"], row["prompt"], row["status"],
            row["max_attempts"]) == (job["id"], job["sessionId"], uid, aid, "what changed today?", "pending", 3)
    assert [n.payload for n in conn.notifies(timeout=1, stop_after=1)] == [str(row["id"])]
    s = schedule_row(conn, sid)
    assert (s["runs"], s["last_job_id"]) == (1, job["id"])
    assert s["next_due_at"] == due + timedelta(seconds=10)


def test_session_new_makes_a_chat_per_run_and_reuse_keeps_one(conn: psycopg.Connection, pool: Pool, owners: tuple) -> None:
    new_sid = add(conn, owners, session="new")
    reuse_sid = add(conn, owners, session="reuse")
    sessions: dict[int, list[str]] = {new_sid: [], reuse_sid: []}
    for _ in range(2):
        make_due(conn, new_sid)
        make_due(conn, reuse_sid)
        for fired in schedule_store.fire_due(pool, max_attempts=5):
            job = conn.execute('SELECT "sessionId" FROM "Job" WHERE "id" = %s', (fired.job_id,)).fetchone()
            sessions[fired.schedule_id].append(job["sessionId"])
    assert len(set(sessions[new_sid])) == 2
    assert len(set(sessions[reuse_sid])) == 1
    assert schedule_row(conn, reuse_sid)["session_id"] == sessions[reuse_sid][0]
    n = conn.execute('SELECT count(*) AS n FROM "ChatMessage" WHERE "sessionId" = %s', (sessions[reuse_sid][0],)).fetchone()
    assert n["n"] == 2


def test_a_given_session_gets_every_run(conn: psycopg.Connection, pool: Pool) -> None:
    w = f.world(conn)
    sid = add(conn, (w.user_id, w.agent_id), session=w.session_id)
    make_due(conn, sid)
    (fired,) = schedule_store.fire_due(pool, max_attempts=5)
    assert conn.execute('SELECT "sessionId" FROM "Job" WHERE "id" = %s', (fired.job_id,)).fetchone()["sessionId"] == w.session_id


def test_one_due_time_fires_exactly_once_however_many_dispatchers_fire_at_once(
    conn: psycopg.Connection, db_url: str, owners: tuple
) -> None:
    ids = [add(conn, owners) for _ in range(20)]
    for sid in ids:
        make_due(conn, sid)
    results = concurrently.on_pools(db_url, 4, lambda p, _: schedule_store.fire_due(p, max_attempts=5))
    fired = [x.schedule_id for r in results for x in r]
    assert sorted(fired) == sorted(ids)
    counts = conn.execute("SELECT runs, count(*) AS n FROM agent_hub.schedule GROUP BY runs").fetchall()
    assert counts == [{"runs": 1, "n": 20}]
    assert conn.execute('SELECT count(*) AS n FROM "Job"').fetchone()["n"] == 20


def test_after_downtime_a_schedule_fires_once_not_once_per_missed_tick(
    conn: psycopg.Connection, pool: Pool, owners: tuple
) -> None:
    sid = add(conn, owners, every_s=10)
    due = make_due(conn, sid, ago_s=3600)  # 360 ticks missed
    assert len(schedule_store.fire_due(pool, max_attempts=5)) == 1
    assert schedule_store.fire_due(pool, max_attempts=5) == []
    s = schedule_row(conn, sid)
    assert s["runs"] == 1
    now = conn.execute("SELECT now() AS now").fetchone()["now"]
    assert now < s["next_due_at"] <= now + timedelta(seconds=10)
    assert (s["next_due_at"] - due).total_seconds() % 10 == 0  # still on its grid


def test_a_schedule_whose_agent_is_gone_is_paused_with_the_reason(conn: psycopg.Connection, pool: Pool, owners: tuple) -> None:
    _, aid = owners
    sid = add(conn, owners)
    make_due(conn, sid)
    conn.execute('DELETE FROM "Agent" WHERE "id" = %s', (aid,))
    (fired,) = schedule_store.fire_due(pool, max_attempts=5)
    assert fired.paused_reason == f"agent {aid} no longer exists" and fired.job_id is None
    s = schedule_row(conn, sid)
    assert (s["paused"], s["paused_reason"], s["runs"]) == (True, f"agent {aid} no longer exists", 0)
    assert conn.execute('SELECT count(*) AS n FROM "Job"').fetchone()["n"] == 0
    assert schedule_store.fire_due(pool, max_attempts=5) == []


def test_pause_stops_firing_and_resume_starts_from_now_without_a_burst(
    conn: psycopg.Connection, pool: Pool, owners: tuple
) -> None:
    sid = add(conn, owners, every_s=10)
    assert schedule_store.set_paused(conn, sid, True, reason="paused by an operator")
    make_due(conn, sid, ago_s=600)
    assert schedule_store.fire_due(pool, max_attempts=5) == []
    assert schedule_store.set_paused(conn, sid, False)
    s = schedule_row(conn, sid)
    now = conn.execute("SELECT now() AS now").fetchone()["now"]
    assert not s["paused"] and s["paused_reason"] is None and s["next_due_at"] > now
    assert schedule_store.fire_due(pool, max_attempts=5) == []
    assert not schedule_store.set_paused(conn, 999_999, True) and not schedule_store.remove(conn, 999_999)
    assert schedule_store.remove(conn, sid)
    assert conn.execute("SELECT count(*) AS n FROM agent_hub.schedule").fetchone()["n"] == 0
