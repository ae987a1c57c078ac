"""End to end: the real web, dispatcher and localpiston processes on real Postgres.

The Next.js request is posted over HTTP; the agent's real code runs in localpiston;
the results are read back from the hub's tables. Both transports are exercised.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tests import factories
from tests.stack import Stack, agent_with_code

CONTEXT_AGENT = """
import itertools
import json
import hub

hub.set_progress(25, "reading context")
hub.send_message("prompt=" + hub.get_prompt())
hub.send_message("env=" + json.dumps(hub.get_env_vars(), sort_keys=True))
hub.send_message("user_vars=" + json.dumps(hub.get_user_vars(), sort_keys=True))
history = hub.get_chat_history()
hub.send_message("history=" + json.dumps([[m["role"], m["content"]] for m in history]))
hub.send_message("agent=" + hub.get_agent()["name"] + " job=" + hub.get_job_id() + " session=" + str(hub.get_session_id()))
hub.set_user_var("color", "blue")
hub.log("all context read", level="info")
print("ordinary output that is not a message")
"""


@pytest.fixture(scope="module", params=["ws", "execute"])
def stack(request: pytest.FixtureRequest, module_db_url: str) -> Iterator[Stack]:
    s = Stack(module_db_url, dispatcher_env={"PISTON_TRANSPORT": request.param, "MAX_OUTPUT_CHARS": "1000000"}).start()
    s.transport = request.param  # type: ignore[attr-defined]
    yield s
    s.close()


def test_agent_reads_every_context_function_and_its_messages_land_in_order(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, CONTEXT_AGENT, env={"API_KEY": "k-123"}, prompt="what is up? héllo 日本 🎉")
    factories.user_var(hub_conn, w.session_id, "name", "Ada")
    resp = stack.post(w)
    assert resp.status_code == 202, resp.text
    job = stack.wait_job(w.job_id)
    assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
    assert job["progress"] == 100
    msgs = stack.messages(w.session_id)
    assert msgs == [
        "prompt=what is up? héllo 日本 🎉",
        'env={"API_KEY": "k-123"}',
        'user_vars={"name": "Ada"}',
        'history=[["user", "what is up? h\\u00e9llo \\u65e5\\u672c \\ud83c\\udf89"]]',
        f"agent=echo job={w.job_id} session={w.session_id}",
    ]
    with stack.connect() as c:
        var = c.execute('SELECT "value", "updatedAt" FROM "UserVariable" WHERE "sessionId" = %s AND "key" = %s',
                        (w.session_id, "color")).fetchone()
        # The claim and the finish each write the Job and the outbox row in one statement: the same now().
        times = c.execute(
            """SELECT j."startedAt" = (o.started_at AT TIME ZONE 'UTC')::timestamp(3) AS started_at_claim,
                      j."completedAt" = (o.finished_at AT TIME ZONE 'UTC')::timestamp(3) AS completed_at_finish
               FROM "Job" j JOIN agent_hub.invocation_outbox o ON o.job_id = j."id" WHERE j."id" = %s""", (w.job_id,),
        ).fetchone()
    assert times == {"started_at_claim": True, "completed_at_finish": True}
    assert var is not None and var["value"] == "blue"
    assert job["startedAt"] <= var["updatedAt"] <= job["completedAt"]  # written during the run
    logs = [entry["message"] for entry in stack.job_logs(w.job_id)]
    assert any("agent: all context read" in m for m in logs)
    assert any("ordinary output that is not a message" in m for m in logs)
    row = stack.outbox(w.job_id)
    assert row["status"] == "succeeded" and row["result"]["messages"] == 5 and row["result"]["exit_code"] == 0
    assert row["result"]["transport"] == stack.transport  # type: ignore[attr-defined]


def test_second_prompt_on_a_session_sees_the_first_answer_in_its_history(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    code = ("import json, hub\n"
            "hub.send_message(json.dumps([m['role'] + ':' + m['content'] for m in hub.get_chat_history()]))\n")
    w1 = agent_with_code(hub_conn, tmp_path, code, prompt="first")
    assert stack.post(w1).status_code == 202
    assert stack.wait_job(w1.job_id)["status"] == "SUCCEEDED"
    w2 = factories.next_turn(hub_conn, w1, "second")
    assert stack.post(w2).status_code == 202
    assert stack.wait_job(w2.job_id)["status"] == "SUCCEEDED"
    last = json.loads(stack.messages(w2.session_id)[-1])
    assert last == ["user:first", 'agent:["user:first"]', "user:second"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("raise ValueError('boom')\n", "ValueError: boom"),
        ("import sys\nsys.exit(3)\n", "status 3"),
        ("while True:\n    pass\n", "timed out after"),
    ],
    ids=["raises", "exits-3", "loops-past-timeout"],
)
def test_agent_fault_fails_the_job_with_a_message_that_says_which(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path, code: str, expected: str
) -> None:
    w = agent_with_code(hub_conn, tmp_path, code)
    assert stack.post(w).status_code == 202
    job = stack.wait_job(w.job_id, timeout=40)
    assert job["status"] == "FAILED", f"{job}\n{stack.logs()}"
    assert expected in (job["errorMessage"] or ""), job["errorMessage"]
    row = stack.outbox(w.job_id)
    assert row["status"] == "failed" and row["attempts"] == 1  # agent faults are not retried


def test_agent_printing_two_megabytes_fails_with_an_output_limit_message(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, "import sys\nsys.stdout.write('x' * 2_000_000)\nsys.stdout.flush()\n")
    assert stack.post(w).status_code == 202
    job = stack.wait_job(w.job_id, timeout=40)
    assert job["status"] == "FAILED", f"{job}\n{stack.logs()}"
    assert "output" in job["errorMessage"] and "limit" in job["errorMessage"], job["errorMessage"]


def test_two_invocations_on_one_session_never_overlap(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    code = ("import time, hub\n"
            "start = time.time()\n"
            "time.sleep(0.8)\n"
            "hub.send_message(f'{start} {time.time()}')\n")
    w1 = agent_with_code(hub_conn, tmp_path, code, prompt="one")
    w2 = factories.next_turn(hub_conn, w1, "two")
    w3 = factories.next_turn(hub_conn, w1, "three")
    for w in (w1, w2, w3):
        assert stack.post(w).status_code == 202
    for w in (w1, w2, w3):
        assert stack.wait_job(w.job_id, timeout=40)["status"] == "SUCCEEDED"
    spans = sorted(tuple(map(float, m.split())) for m in stack.messages(w1.session_id))
    assert len(spans) == 3
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans


def test_messages_land_while_the_agent_runs_on_ws_and_only_after_it_ends_on_execute(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    sleep_s = 4
    code = f"import time, hub\nhub.send_message('early')\ntime.sleep({sleep_s})\nhub.send_message('late')\n"
    w = agent_with_code(hub_conn, tmp_path, code)
    assert stack.post(w).status_code == 202
    if stack.transport == "ws":  # type: ignore[attr-defined]
        deadline = time.monotonic() + 15
        seen_mid_run = False
        while time.monotonic() < deadline:
            msgs = stack.messages(w.session_id)
            if msgs == ["early"] and stack.job(w.job_id)["status"] == "PROCESSING":
                seen_mid_run = True
                break
            time.sleep(0.05)
        assert seen_mid_run, stack.logs()
    job = stack.wait_job(w.job_id)
    assert job["status"] == "SUCCEEDED", f"{job}\n{stack.logs()}"
    assert stack.messages(w.session_id) == ["early", "late"]
    if stack.transport == "execute":  # type: ignore[attr-defined]
        # The batch transport hands the output over when the run ends, so even 'early' is written after the
        # agent's sleep. Both timestamps are Postgres' clock: the claim's now() and the insert's clock_timestamp().
        with stack.connect() as c:
            early = c.execute('SELECT "timestamp" FROM "ChatMessage" WHERE "sessionId" = %s AND "content" = %s',
                              (w.session_id, "early")).fetchone()
        assert early is not None
        assert early["timestamp"] - job["startedAt"] >= timedelta(seconds=sleep_s), (early, job["startedAt"])


def test_cancelled_job_is_skipped_and_its_row_closed_as_cancelled(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    # Hold the session with a slow first run so the second is still queued when cancelled.
    slow = "import time, hub\ntime.sleep(1.5)\nhub.send_message('done')\n"
    w1 = agent_with_code(hub_conn, tmp_path, slow, prompt="one")
    w2 = factories.next_turn(hub_conn, w1, "two")
    assert stack.post(w1).status_code == 202
    assert stack.post(w2).status_code == 202
    hub_conn.execute('UPDATE "Job" SET "status" = \'CANCELLED\' WHERE "id" = %s', (w2.job_id,))
    assert stack.wait_job(w1.job_id)["status"] == "SUCCEEDED"
    deadline = time.monotonic() + 15
    while stack.outbox(w2.job_id)["status"] != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.outbox(w2.job_id)["status"] == "cancelled"
    assert stack.job(w2.job_id)["status"] == "CANCELLED"
    assert stack.messages(w1.session_id) == ["done"]


def test_missing_entrypoint_fails_with_what_was_found(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, "print(1)\n", name="a.py", extra_files={"b.py": "print(2)\n"})
    assert stack.post(w).status_code == 202
    job = stack.wait_job(w.job_id)
    assert job["status"] == "FAILED"
    assert "a.py" in job["errorMessage"] and "b.py" in job["errorMessage"], job["errorMessage"]
