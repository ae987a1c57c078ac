"""Scheduled runs with the real processes: two dispatchers, one Job per tick with the user's message and the
agent's answer in the chat, removal stops it, and the operator commands answer as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import REPO, Stack, agent_with_code

ANSWER = "import hub\nhub.send_message('answer to ' + hub.get_prompt())\n"


@pytest.fixture(scope="module")
def stack(module_db_url: str) -> Iterator[Stack]:
    s = Stack(module_db_url, dispatcher_env={"DISPATCHER_POLL_INTERVAL_S": "0.5"}).start()
    s.add_dispatcher()
    yield s
    s.close()


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": stack.db_url, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "dispatcher", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_every_tick_makes_one_job_with_its_message_and_answer_and_remove_stops_it(
    stack: Stack, tmp_path: Path
) -> None:
    with stack.connect() as conn:
        w = agent_with_code(conn, tmp_path, ANSWER)  # its own Job is never posted: only scheduled Jobs run
    added_at = time.monotonic()
    added = cli(stack, "schedule", "add", "--agent", w.agent_id, "--user", w.user_id, "--every", "5s",
                "--prompt", "status report", "--session", "reuse", "--json")
    assert added.returncode == 0, added.stderr
    sid = json.loads(added.stdout)["id"]

    deadline = time.monotonic() + 60
    jobs: list[dict] = []
    while time.monotonic() < deadline:
        with stack.connect() as conn:
            jobs = conn.execute('SELECT "id", "status"::text AS status, "sessionId", "createdAt" FROM "Job" '
                                'WHERE "agentId" = %s AND "id" <> %s ORDER BY "createdAt"', (w.agent_id, w.job_id)).fetchall()
        if len(jobs) >= 3 and all(j["status"] == "SUCCEEDED" for j in jobs[:3]):
            break
        time.sleep(0.2)
    assert len(jobs) >= 3, f"{len(jobs)} scheduled jobs\n{stack.logs()}"
    assert sum("schedule_fired" in d.output() for d in stack.dispatchers) >= 1

    # Pause waits for a firing in flight (its row lock), so after it the run count is final.
    assert cli(stack, "schedule", "pause", str(sid)).returncode == 0
    ticks = int((time.monotonic() - added_at) // 5) + 1
    runs = next(s["runs"] for s in json.loads(cli(stack, "schedule", "list", "--json").stdout)["schedules"]
                if s["id"] == sid)
    removed = cli(stack, "schedule", "remove", str(sid))
    assert removed.returncode == 0 and removed.stdout.strip() == f"schedule {sid}: removed"
    time.sleep(7)  # more than one interval: nothing may fire now (a negative can only be observed over time)
    with stack.connect() as conn:
        jobs = conn.execute('SELECT "id", "status"::text AS status, "sessionId", "createdAt" FROM "Job" '
                            'WHERE "agentId" = %s AND "id" <> %s ORDER BY "createdAt"', (w.agent_id, w.job_id)).fetchall()
        # One Job per firing, never more firings than due times went by, none after the removal.
        assert len(jobs) == runs <= ticks, (len(jobs), runs, ticks)
        for j in jobs:
            stack.wait_job(j["id"])
        claims = conn.execute(
            "SELECT o.job_id, count(*) FILTER (WHERE e.reason = 'claimed') AS claims FROM agent_hub.invocation_outbox o "
            "JOIN agent_hub.invocation_outbox_event e ON e.outbox_id = o.id WHERE o.agent_id = %s GROUP BY o.job_id",
            (w.agent_id,)).fetchall()
        assert sorted(c["job_id"] for c in claims) == sorted(j["id"] for j in jobs)
        assert all(c["claims"] == 1 for c in claims)
        # --session reuse: one chat, holding each run's prompt and the agent's answer to it, in turn.
        assert len({j["sessionId"] for j in jobs}) == 1
        chat = conn.execute('SELECT "role", "content" FROM "ChatMessage" WHERE "sessionId" = %s ORDER BY "timestamp", "id"',
                            (jobs[0]["sessionId"],)).fetchall()
    turn = [("user", "status report"), ("agent", "answer to status report")]
    assert [(m["role"], m["content"]) for m in chat] == turn * len(jobs)


def test_a_cron_schedule_with_a_zone_is_listed_with_its_next_due_time_and_bad_ones_are_refused(
    stack: Stack, tmp_path: Path
) -> None:
    with stack.connect() as conn:
        w = agent_with_code(conn, tmp_path, ANSWER)
    added = cli(stack, "schedule", "add", "--agent", w.agent_id, "--user", w.user_id, "--cron", "0 9 * * MON-FRI",
                "--tz", "Europe/Riga", "--prompt", "morning digest")
    assert added.returncode == 0, added.stderr
    assert "cron '0 9 * * MON-FRI' (Europe/Riga), first run at" in added.stdout
    listed = json.loads(cli(stack, "schedule", "list", "--json").stdout)["schedules"]
    mine = [s for s in listed if s["agent_id"] == w.agent_id]
    assert len(mine) == 1
    assert (mine[0]["cron"], mine[0]["tz"], mine[0]["state"], mine[0]["runs"]) == ("0 9 * * MON-FRI", "Europe/Riga", "active", 0)
    assert mine[0]["next_due_at"] is not None
    paused = cli(stack, "schedule", "pause", str(mine[0]["id"]))
    assert paused.returncode == 0 and "paused" in paused.stdout
    text = cli(stack, "schedule", "list").stdout
    assert f"agent {w.agent_id}" in text and "paused (paused by an operator)" in text

    for args, message in [
        (("--cron", "0 9 * *"), "must have 5 fields"),
        (("--cron", "0 9 * * *", "--tz", "Nowhere/Town"), "unknown time zone 'Nowhere/Town'"),
        (("--every", "soon"), "--every: not an interval: 'soon'"),
        (("--every", "1s"), "outside 5s..366d"),
    ]:
        bad = cli(stack, "schedule", "add", "--agent", w.agent_id, "--user", w.user_id, "--prompt", "x", *args)
        assert bad.returncode == 2 and bad.stderr.startswith("dispatcher schedule: ") and message in bad.stderr, bad.stderr
    assert cli(stack, "schedule", "remove", "999999").returncode == 1


FAIL_ON_ASK = ("import hub, sys\np = hub.get_prompt()\nif 'fail' in p:\n    print('cannot do ' + p, file=sys.stderr)\n"
               "    raise SystemExit(3)\nhub.send_message('done: ' + p)\n")


def test_stats_counts_equal_the_real_outcomes_of_a_mix_of_runs(stack: Stack, tmp_path: Path) -> None:
    from tests import factories

    with stack.connect() as conn:
        first = agent_with_code(conn, tmp_path, FAIL_ON_ASK)
        worlds = [first] + [factories.next_turn(conn, first, p) for p in ("ok 2", "please fail", "ok 3", "fail again")]
    for w in worlds:
        assert stack.post(w).status_code == 202
    finished = [stack.wait_job(w.job_id)["status"] for w in worlds]
    assert finished.count("SUCCEEDED") == 3 and finished.count("FAILED") == 2

    res = cli(stack, "stats", "--agent", first.agent_id, "--since", "1h", "--json")
    assert res.returncode == 0, res.stderr
    (a,) = json.loads(res.stdout)["agents"]
    with stack.connect() as conn:
        real = conn.execute("SELECT status::text AS s, count(*) AS n, sum(attempts) AS attempts "
                            "FROM agent_hub.invocation_outbox WHERE agent_id = %s GROUP BY 1", (first.agent_id,)).fetchall()
    by = {r["s"]: r["n"] for r in real}
    assert (a["runs"], a["succeeded"], a["failed"], a["cancelled"], a["open"]) == (
        sum(by.values()), by.get("succeeded", 0), by.get("failed", 0), by.get("cancelled", 0), 0)
    assert (a["succeeded"], a["failed"]) == (3, 2)
    assert a["success_rate"] == 0.6
    assert a["attempts"] == sum(r["attempts"] for r in real)
    assert a["p50_ms"] is not None and a["p50_ms"] <= a["p95_ms"]
    assert sum(f["count"] for f in a["top_failures"]) == 2
    assert all("exited with code 3" in f["reason"] or "cannot do" in f["reason"] for f in a["top_failures"]), a

    text = cli(stack, "stats", "--agent", first.agent_id)
    assert text.returncode == 0 and f"agent {first.agent_id}" in text.stdout and "success rate 60.0%" in text.stdout
