"""The operator CLI (`python -m dispatcher list|show|replay|cancel`) and the outbox event table, on real Postgres.

Rows are moved through their states with the dispatcher's own SQL (claim, retry_later,
finish), so the event rows are the ones production writes. The CLI runs as a subprocess.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from core import feed
from core.sqlfiles import query
from core.vocabulary import status_event
from tests import factories

REPO = Path(__file__).resolve().parents[2]
OWNER = "test-dispatcher:1:abc"
ACTOR = f"ops-tester@{socket.gethostname()}"


def cli(db_url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"PYTHONPATH": str(REPO), "USER": "ops-tester"})
    if db_url is not None:
        env["DATABASE_URL"] = db_url
    return subprocess.run([sys.executable, "-m", "dispatcher", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def queued(conn: psycopg.Connection, *, max_attempts: int = 5) -> tuple[factories.World, int]:
    w = factories.world(conn)
    row = conn.execute(
        "INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, session_id, user_id, prompt, max_attempts) "
        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (w.job_id, w.agent_id, w.session_id, w.user_id, w.prompt, max_attempts),
    ).fetchone()
    assert row is not None
    return w, row["id"]


def claim(conn: psycopg.Connection, owner: str = OWNER, lease_s: float = 30) -> list[int]:
    rows = conn.execute(query("dispatcher/claim"),
                        {"owner": owner, "batch": 100, "lease_s": lease_s, "running": [], "notify": False}).fetchall()
    return [r["id"] for r in rows]


def finish(conn: psycopg.Connection, row_id: int, status: str, error: str | None = None, owner: str = OWNER) -> None:
    job_status = {"succeeded": "SUCCEEDED", "failed": "FAILED", "cancelled": "CANCELLED"}[status]
    done = conn.execute(query("dispatcher/finish"), {
        "outbox_id": row_id, "owner": owner, "attempt": attempt(conn, row_id),
        "status": status, "job_status": job_status, "result": Jsonb({"messages": 1}),
        "error": error, "status_message": status, "job_id": None,
        "log_ids": [], "log_levels": [], "log_messages": [], "log_ats": [],
    }).fetchone()
    assert done is not None


def attempt(conn: psycopg.Connection, row_id: int) -> int:
    """The row's current attempt: the fencing token a run of it writes with."""
    return int(conn.execute("SELECT attempts FROM agent_hub.invocation_outbox WHERE id = %s", (row_id,)).fetchone()["attempts"])


def failed_row(conn: psycopg.Connection, error: str = "Piston unavailable: connection refused") -> tuple[factories.World, int]:
    w, row_id = queued(conn)
    assert row_id in claim(conn)
    finish(conn, row_id, "failed", error)
    return w, row_id


def outbox(conn: psycopg.Connection, row_id: int) -> dict[str, Any]:
    row = conn.execute("SELECT *, status::text AS status FROM agent_hub.invocation_outbox WHERE id = %s", (row_id,)).fetchone()
    assert row is not None
    return row


def job(conn: psycopg.Connection, job_id: str) -> dict[str, Any]:
    row = conn.execute('SELECT *, "status"::text AS status FROM "Job" WHERE "id" = %s', (job_id,)).fetchone()
    assert row is not None
    return row


def events(conn: psycopg.Connection, row_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT from_status::text AS from_status, to_status::text AS to_status, attempts, actor, reason, detail "
        "FROM agent_hub.invocation_outbox_event WHERE outbox_id = %s ORDER BY id", (row_id,)).fetchall()


def transitions(conn: psycopg.Connection, row_id: int) -> list[tuple[str | None, str, str, str]]:
    return [(e["from_status"], e["to_status"], e["actor"], e["reason"]) for e in events(conn, row_id)]


# -- the event table -----------------------------------------------------------------------------------
def test_every_dispatcher_transition_is_recorded_and_heartbeats_are_not(conn: psycopg.Connection) -> None:
    w, row_id = queued(conn)
    assert claim(conn) == [row_id]
    conn.execute(query("dispatcher/heartbeat"), {"owner": OWNER, "ids": [row_id], "lease_s": 30})
    back = conn.execute(query("dispatcher/retry_later"), {
        "outbox_id": row_id, "owner": OWNER, "attempt": attempt(conn, row_id), "delay_s": 0,
        "error": "Piston unavailable", "status_message": "waiting"}).fetchone()
    assert back is not None
    assert claim(conn) == [row_id]
    released = conn.execute(query("dispatcher/release"), {"owner": OWNER, "ids": [row_id],
                                                          "attempts": [attempt(conn, row_id)]}).fetchall()
    assert [r["id"] for r in released] == [row_id]
    assert claim(conn) == [row_id]
    finish(conn, row_id, "succeeded")
    assert transitions(conn, row_id) == [
        (None, "pending", "ingress", "queued"),
        ("pending", "running", "dispatcher", "claimed"),
        ("running", "pending", "dispatcher", "transient fault; retry later"),
        ("pending", "running", "dispatcher", "claimed"),
        ("running", "pending", "dispatcher", "released at shutdown"),
        ("pending", "running", "dispatcher", "claimed"),
        ("running", "succeeded", "dispatcher", "finished"),
    ]
    evs = events(conn, row_id)
    assert evs[2]["detail"]["error"] == "Piston unavailable"
    assert evs[1]["detail"]["lease_owner"] == OWNER
    assert [e["attempts"] for e in evs] == [0, 1, 1, 2, 1, 2, 2]
    assert job(conn, w.job_id)["status"] == "SUCCEEDED"


def test_a_reclaimed_expired_lease_is_recorded_with_the_dead_owner(conn: psycopg.Connection) -> None:
    _, row_id = queued(conn)
    assert claim(conn, owner="dead:1:x") == [row_id]
    conn.execute("UPDATE agent_hub.invocation_outbox SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (row_id,))
    assert claim(conn, owner="alive:2:y") == [row_id]
    last = events(conn, row_id)[-1]
    assert (last["from_status"], last["to_status"], last["reason"], last["attempts"]) == (
        "running", "running", "lease expired; reclaimed", 2)
    assert last["detail"]["previous_lease_owner"] == "dead:1:x" and last["detail"]["lease_owner"] == "alive:2:y"


# -- list / show -------------------------------------------------------------------------------------
def test_list_prints_counts_by_status_then_rows_and_applies_filters(conn: psycopg.Connection, db_url: str) -> None:
    w_failed, failed_id = failed_row(conn)  # first: claim() takes every due row
    _, pending_id = queued(conn)
    _, old_id = queued(conn)
    conn.execute("UPDATE agent_hub.invocation_outbox SET created_at = now() - interval '3 hours' WHERE id = %s", (old_id,))

    res = cli(db_url, "list")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["STATUS", "N", "OLDEST", "NEWEST"]
    assert lines[1].split()[:2] == ["pending", "2"] and lines[2].split()[:2] == ["failed", "1"]  # the enum's order
    header = next(i for i, line in enumerate(lines) if line.startswith("ID "))
    assert [int(line.split()[0]) for line in lines[header + 1:]] == [old_id, pending_id, failed_id]
    assert "Piston unavailable" in res.stdout

    res = cli(db_url, "list", "--status", "failed", "--json")
    data = json.loads(res.stdout)
    assert [r["id"] for r in data["rows"]] == [failed_id]
    assert data["counts"] == {"pending": 2, "failed": 1}  # counts ignore --status on purpose

    assert [r["id"] for r in json.loads(cli(db_url, "list", "--since", "1h", "--json").stdout)["rows"]] == [pending_id, failed_id]
    assert [r["id"] for r in json.loads(cli(db_url, "list", "--older-than", "2h", "--json").stdout)["rows"]] == [old_id]
    by_agent = json.loads(cli(db_url, "list", "--agent", w_failed.agent_id, "--json").stdout)
    assert [r["id"] for r in by_agent["rows"]] == [failed_id] and by_agent["counts"] == {"failed": 1}


def test_show_by_outbox_id_or_job_id_prints_row_job_logs_and_events(conn: psycopg.Connection, db_url: str) -> None:
    w, row_id = failed_row(conn, error="agent exited with status 1: ValueError")
    conn.execute('INSERT INTO "JobLog" ("id", "level", "message", "jobId") VALUES (%s, %s, %s, %s)',
                 (factories.new_id(), "error", "agent exited with status 1: ValueError", w.job_id))
    by_id = cli(db_url, "show", str(row_id))
    by_job = cli(db_url, "show", w.job_id)
    assert by_id.returncode == 0 and by_job.returncode == 0, by_id.stderr
    assert by_id.stdout == by_job.stdout
    out = by_id.stdout
    assert "agent exited with status 1: ValueError" in out and w.job_id in out
    assert "events (3)" in out and "claimed" in out and "finished" in out
    assert w.prompt not in out  # the prompt is user content: only its length is shown
    data = json.loads(cli(db_url, "show", w.job_id, "--json").stdout)
    assert data["row"]["id"] == row_id and data["job"]["status"] == "FAILED"
    assert [e["to_status"] for e in data["events"]] == ["pending", "running", "failed"]
    assert [entry["level"] for entry in data["logs"]] == ["error"]

    missing = cli(db_url, "show", "no-such-job")
    assert missing.returncode == 1 and "not found" in missing.stderr


# -- replay ------------------------------------------------------------------------------------------
def test_replay_requeues_a_failed_row_with_a_fresh_budget_notifies_and_records_who_and_why(
    conn: psycopg.Connection, db_url: str
) -> None:
    w, row_id = failed_row(conn)
    conn.execute('UPDATE "Job" SET "progress" = 40 WHERE "id" = %s', (w.job_id,))
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN invocation_outbox")
        res = cli(db_url, "replay", str(row_id), "--reason", "piston was down")
        assert res.returncode == 0, res.stdout + res.stderr
        notes = [n.payload for n in listener.notifies(timeout=2, stop_after=1)]
    assert notes == [str(row_id)]
    assert "1 done" in res.stdout
    row = outbox(conn, row_id)
    assert (row["status"], row["attempts"], row["last_error"], row["finished_at"], row["result"]) == (
        "pending", 0, None, None, None)
    j = job(conn, w.job_id)
    assert (j["status"], j["errorMessage"], j["completedAt"], j["progress"]) == ("QUEUED", None, None, 0)
    last = events(conn, row_id)[-1]
    assert (last["from_status"], last["to_status"], last["actor"], last["reason"]) == (
        "failed", "pending", ACTOR, "piston was down")
    assert last["detail"]["previous_error"] == "Piston unavailable: connection refused"
    # The dispatcher takes it again, and its own events are attributed to it, not to the operator.
    assert claim(conn) == [row_id]
    assert transitions(conn, row_id)[-1] == ("pending", "running", "dispatcher", "claimed")


def test_replay_refuses_pending_and_running_rows_and_reports_unknown_ids_with_exit_1(
    conn: psycopg.Connection, db_url: str
) -> None:
    w_failed, failed_id = failed_row(conn)
    _, running_id = queued(conn)
    assert claim(conn) == [running_id]
    _, pending_id = queued(conn)
    res = cli(db_url, "replay", str(pending_id), str(running_id), w_failed.job_id, "999999", "--json")
    assert res.returncode == 1, res.stderr
    items = {i["ref"]: i for i in json.loads(res.stdout)["items"]}
    assert items[str(pending_id)]["result"] == "refused" and "still pending" in items[str(pending_id)]["note"]
    assert items[str(running_id)]["result"] == "refused" and "still running" in items[str(running_id)]["note"]
    assert items[w_failed.job_id]["result"] == "done"
    assert items["999999"]["result"] == "not_found"
    assert outbox(conn, running_id)["status"] == "running" and outbox(conn, pending_id)["attempts"] == 0
    assert outbox(conn, failed_id)["status"] == "pending"


def test_replay_refuses_a_row_whose_job_was_deleted(conn: psycopg.Connection, db_url: str) -> None:
    w, row_id = failed_row(conn)
    conn.execute('DELETE FROM "Job" WHERE "id" = %s', (w.job_id,))
    res = cli(db_url, "replay", str(row_id))
    assert res.returncode == 1 and "deleted" in res.stdout
    assert outbox(conn, row_id)["status"] == "failed"


def test_filtered_replay_takes_only_matching_rows_and_dry_run_changes_nothing(conn: psycopg.Connection, db_url: str) -> None:
    _, recent_a = failed_row(conn)
    w_b, recent_b = failed_row(conn)
    _, old = failed_row(conn)
    conn.execute("UPDATE agent_hub.invocation_outbox SET created_at = now() - interval '2 days' WHERE id = %s", (old,))
    _, succeeded = queued(conn)
    assert claim(conn) == [succeeded]
    finish(conn, succeeded, "succeeded")

    dry = cli(db_url, "replay", "--status", "failed", "--since", "1d", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert sorted(i["id"] for i in json.loads(dry.stdout)["items"]) == [recent_a, recent_b]
    assert {i["result"] for i in json.loads(dry.stdout)["items"]} == {"would_do"}
    assert [outbox(conn, i)["status"] for i in (recent_a, recent_b, old)] == ["failed"] * 3

    only_b = cli(db_url, "replay", "--status", "failed", "--since", "1d", "--agent", w_b.agent_id)
    assert only_b.returncode == 0 and "1 done" in only_b.stdout
    assert [outbox(conn, i)["status"] for i in (recent_a, recent_b, old, succeeded)] == [
        "failed", "pending", "failed", "succeeded"]

    res = cli(db_url, "replay", "--status", "failed", "--since", "1d")
    assert res.returncode == 0 and "1 done" in res.stdout
    assert [outbox(conn, i)["status"] for i in (recent_a, old)] == ["pending", "failed"]

    nothing = cli(db_url, "replay", "--status", "cancelled", "--since", "1h")
    assert nothing.returncode == 0 and "nothing matched" in nothing.stdout


# -- cancel ------------------------------------------------------------------------------------------
def test_cancel_of_a_pending_row_cancels_the_row_and_its_job_at_once(conn: psycopg.Connection, db_url: str) -> None:
    w, row_id = queued(conn)
    res = cli(db_url, "cancel", w.job_id, "--reason", "user asked")
    assert res.returncode == 0, res.stdout + res.stderr
    row = outbox(conn, row_id)
    j = job(conn, w.job_id)
    assert (row["status"], j["status"]) == ("cancelled", "CANCELLED")
    # One statement cancels both: the Job's completedAt is the row's finished_at, in Prisma's UTC TIMESTAMP(3).
    same = conn.execute("SELECT (%s::timestamptz AT TIME ZONE 'UTC')::timestamp(3) = %s AS same",
                        (row["finished_at"], j["completedAt"])).fetchone()
    assert same == {"same": True}
    assert transitions(conn, row_id)[-1] == ("pending", "cancelled", ACTOR, "user asked")
    assert claim(conn) == []


def test_cancel_of_a_running_row_cancels_the_job_and_leaves_the_row_to_its_dispatcher(
    conn: psycopg.Connection, db_url: str
) -> None:
    w, row_id = queued(conn)
    assert claim(conn) == [row_id]
    res = cli(db_url, "cancel", str(row_id))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "next heartbeat" in res.stdout
    assert outbox(conn, row_id)["status"] == "running"
    assert job(conn, w.job_id)["status"] == "CANCELLED"
    # What the dispatcher's heartbeat sees, and what it then writes.
    beat = conn.execute(query("dispatcher/heartbeat"), {"owner": OWNER, "ids": [row_id], "lease_s": 30}).fetchall()
    assert [(b["id"], b["job_status"]) for b in beat] == [(row_id, "CANCELLED")]
    finish(conn, row_id, "cancelled")
    assert transitions(conn, row_id)[-2:] == [
        ("running", "running", ACTOR, "cancelled by an operator"),
        ("running", "cancelled", "dispatcher", "finished"),
    ]
    assert job(conn, w.job_id)["status"] == "CANCELLED"
    again = cli(db_url, "cancel", str(row_id))
    assert again.returncode == 1 and "already cancelled" in again.stdout


# -- hub_events ---------------------------------------------------------------------------------------
def test_replay_and_cancel_announce_each_jobs_new_status_on_hub_events_and_refusals_announce_nothing(
    conn: psycopg.Connection, db_url: str
) -> None:
    w_failed, failed_id = failed_row(conn)
    w_running, running_id = queued(conn)
    assert claim(conn) == [running_id]
    w_pending, pending_id = queued(conn)
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN hub_events")
        assert cli(db_url, "replay", str(failed_id), "--dry-run").returncode == 0
        assert cli(db_url, "replay", str(failed_id)).returncode == 0
        assert cli(db_url, "cancel", str(pending_id), str(running_id)).returncode == 0
        assert cli(db_url, "cancel", str(pending_id)).returncode == 1  # already cancelled: refused
        assert cli(db_url, "replay", str(running_id)).returncode == 1  # still running: refused
        listener.execute("NOTIFY hub_events, 'end'")  # after the last command: nothing else came before it
        got = [n.payload for n in listener.notifies(timeout=10, stop_after=4)]
    assert [json.loads(p) if p != "end" else p for p in got] == [
        status_event(w_failed.job_id, w_failed.session_id, "QUEUED"),
        status_event(w_pending.job_id, w_pending.session_id, "CANCELLED"),
        status_event(w_running.job_id, w_running.session_id, "CANCELLED"),
        "end",
    ]


# -- usage and configuration errors ------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["replay"],                                  # nothing named
    ["replay", "1", "--status", "failed"],       # both ids and a filter
    ["replay", "--status", "failed"],            # a bulk replay without --since
    ["replay", "--status", "pending", "--since", "1h"],  # only finished rows can be replayed
    ["list", "--since", "two hours"],
    ["cancel"],
])
def test_usage_errors_exit_2_and_change_nothing(conn: psycopg.Connection, db_url: str, args: list[str]) -> None:
    _, row_id = failed_row(conn)
    res = cli(db_url, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert outbox(conn, row_id)["status"] == "failed"


def test_missing_or_unreachable_database_exits_2_with_one_clear_line() -> None:
    res = cli(None, "list")
    assert res.returncode == 2 and "DATABASE_URL is not set" in res.stderr
    res = cli("postgresql://nobody@127.0.0.1:1/nothing", "list")
    assert res.returncode == 2 and "cannot reach the database" in res.stderr
    assert "Traceback" not in res.stderr


# -- prune (retention) -------------------------------------------------------------------------------
def _outbox_row(conn: psycopg.Connection, status: str, *, finished_days_ago: float | None = None,
                parent: int | None = None) -> int:
    """A row as the dispatcher leaves it; terminal rows finished `finished_days_ago` days ago."""
    n = conn.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox").fetchone()["n"]
    row = conn.execute(
        "INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, session_id, user_id, prompt, status, attempts, "
        "lease_owner, lease_expires_at, finished_at, parent_id, depth) "
        "VALUES (%(job)s, 'a', %(session)s, 'u', 'p', %(status)s::agent_hub.invocation_status, 1, "
        "CASE WHEN %(status)s = 'running' THEN 'someone' END, "
        "CASE WHEN %(status)s = 'running' THEN now() + interval '1 minute' END, "
        "CASE WHEN %(status)s IN ('succeeded', 'failed', 'cancelled') THEN now() - make_interval(days => %(days)s) END, "
        "%(parent)s, CASE WHEN %(parent)s::bigint IS NULL THEN 0 ELSE 1 END) "
        "RETURNING id",
        {"job": f"prune-job-{n}", "session": None if parent else f"prune-s-{n}", "status": status,
         "days": finished_days_ago or 0, "parent": parent}).fetchone()
    return int(row["id"])


def _ids(conn: psycopg.Connection) -> list[int]:
    return [r["id"] for r in conn.execute("SELECT id FROM agent_hub.invocation_outbox ORDER BY id").fetchall()]


def test_prune_deletes_old_finished_rows_with_their_events_and_keeps_everything_else(
    conn: psycopg.Connection, db_url: str
) -> None:
    old_ok = _outbox_row(conn, "succeeded", finished_days_ago=40)
    old_failed = _outbox_row(conn, "failed", finished_days_ago=31)
    recent = _outbox_row(conn, "succeeded", finished_days_ago=2)
    pending, running = _outbox_row(conn, "pending"), _outbox_row(conn, "running")
    w, real = queued(conn)  # a real one with its Prisma rows, finished long ago
    assert real in claim(conn)
    finish(conn, real, "succeeded")
    conn.execute("UPDATE agent_hub.invocation_outbox SET finished_at = now() - interval '60 days' WHERE id = %s", (real,))
    events = "SELECT count(*) AS n FROM agent_hub.invocation_outbox_event WHERE outbox_id = %s"
    assert conn.execute(events, (real,)).fetchone()["n"] >= 3

    res = cli(db_url, "prune", "--older-than", "30d", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["rows"] == 3
    assert _ids(conn) == [recent, pending, running]
    assert old_ok not in _ids(conn) and old_failed not in _ids(conn)
    assert conn.execute(events, (real,)).fetchone()["n"] == 0
    # the hub's own rows are Prisma's: untouched
    assert conn.execute('SELECT "status"::text AS s FROM "Job" WHERE "id" = %s', (w.job_id,)).fetchone() == {"s": "SUCCEEDED"}


def test_prune_takes_a_call_agent_tree_whole_and_leaves_a_tree_with_a_running_child(
    conn: psycopg.Connection, db_url: str
) -> None:
    busy_parent = _outbox_row(conn, "failed", finished_days_ago=40)
    busy_child = _outbox_row(conn, "running", parent=busy_parent)
    done_parent = _outbox_row(conn, "succeeded", finished_days_ago=40)
    _outbox_row(conn, "succeeded", finished_days_ago=40, parent=done_parent)
    # batch 1, the tree it cannot take first: the walk must go past it, not stop or loop on it
    res = cli(db_url, "prune", "--older-than", "30d", "--batch", "1")
    assert res.returncode == 0, res.stderr
    assert "deleted 2 finished outbox row(s)" in res.stdout
    assert _ids(conn) == [busy_parent, busy_child]


def _feed(conn: psycopg.Connection, outbox_id: int, n: int = 2) -> None:
    """``n`` feed events of the row's job, written as the dispatcher does (core.feed)."""
    row = outbox(conn, outbox_id)
    events = [feed.log(row["job_id"], row["session_id"], level="info", message=f"line {i}") for i in range(n)]
    feed.insert_events(conn, events)


def _feed_jobs(conn: psycopg.Connection) -> list[str]:
    return [r["job_id"] for r in conn.execute("SELECT DISTINCT job_id FROM agent_hub.feed_event ORDER BY 1").fetchall()]


def test_prune_deletes_the_feed_events_of_the_pruned_rows_and_their_children_only(
    conn: psycopg.Connection, db_url: str
) -> None:
    parent = _outbox_row(conn, "succeeded", finished_days_ago=40)
    child = _outbox_row(conn, "succeeded", finished_days_ago=40, parent=parent)
    recent = _outbox_row(conn, "succeeded", finished_days_ago=2)
    running = _outbox_row(conn, "running")
    for row_id in (parent, child, recent, running):
        _feed(conn, row_id)
    kept = sorted(outbox(conn, r)["job_id"] for r in (recent, running))

    dry = cli(db_url, "prune", "--older-than", "30d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert len(_feed_jobs(conn)) == 4
    res = cli(db_url, "prune", "--older-than", "30d")
    assert res.returncode == 0, res.stderr
    assert _ids(conn) == [recent, running]
    assert _feed_jobs(conn) == kept
    assert conn.execute("SELECT count(*) AS n FROM agent_hub.feed_event").fetchone()["n"] == 4


def test_prune_dry_run_counts_and_deletes_nothing(conn: psycopg.Connection, db_url: str) -> None:
    rows = [_outbox_row(conn, "succeeded", finished_days_ago=90) for _ in range(3)]
    res = cli(db_url, "prune", "--older-than", "30d", "--dry-run", "--batch", "2", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"action": "prune", "dry_run": True, "older_than_s": 30 * 86400.0, "rows": 3}
    assert _ids(conn) == rows


@pytest.mark.parametrize("args", [["--older-than", "30m"], ["--older-than", "30d", "--batch", "0"], []])
def test_prune_refuses_a_short_age_a_bad_batch_or_no_age_with_exit_2(
    conn: psycopg.Connection, db_url: str, args: list[str]
) -> None:
    row = _outbox_row(conn, "succeeded", finished_days_ago=90)
    res = cli(db_url, "prune", *args)
    assert res.returncode == 2
    assert res.stderr.strip()
    assert _ids(conn) == [row]
