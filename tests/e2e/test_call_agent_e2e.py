"""End to end: hub.call_agent runs another agent as a child invocation (own Job, own env, own logs).

Agents find the agent to call in their own env vars (CALL), so a chain is set up by env alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.stack import Stack, agent_with_code
from tests.waiting import wait_until

# Calls the agent in its CALL env var (if any) with its own prompt + "!", then reports what came back.
CALLER = """
import json, hub
env = hub.get_env_vars()
hub.send_message("env=" + json.dumps(env, sort_keys=True))
if env.get("CALL"):
    result = hub.call_agent(env["CALL"], {"asked_by": hub.get_agent()["name"], "prompt": hub.get_prompt()})
    hub.send_message("result=" + json.dumps(result, sort_keys=True))
"""


@pytest.fixture(scope="module")
def stack(module_db_url: str) -> Iterator[Stack]:
    s = Stack(module_db_url, dispatcher_env={"PISTON_TRANSPORT": "ws", "AGENT_RUN_TIMEOUT_MS": "15000"},
              piston_env={"PISTON_RUN_TIMEOUT": "20000", "PISTON_MAX_CONCURRENT_JOBS": "16"}).start()
    yield s
    s.close()


def make_agent(conn: psycopg.Connection, tmp: Path, user_id: str, name: str, code: str, env: dict[str, str]) -> str:
    agent_id = factories.agent(conn, user_id, name=name)
    path = tmp / f"{agent_id}.py"
    path.write_text(code)
    factories.agent_file(conn, agent_id, "main.py", str(path), len(code))
    for key, value in env.items():
        factories.env_var(conn, agent_id, key, value)
    return agent_id


def set_env(conn: psycopg.Connection, agent_id: str, key: str, value: str) -> None:
    factories.env_var(conn, agent_id, key, value)


def result_of(messages: list[str]) -> dict[str, Any]:
    found = [m for m in messages if m.startswith("result=")]
    assert len(found) == 1, messages
    return dict(json.loads(found[0][len("result="):]))


def child_jobs(stack: Stack, parent_job_id: str) -> list[dict[str, Any]]:
    """The parent's children, in call order: their Job rows joined with their outbox rows."""
    with stack.connect() as c:
        return c.execute(
            'SELECT j.*, c.depth, c.agent_chain, c.status AS outbox_status, c.result, '
            """j."completedAt" = (c.finished_at AT TIME ZONE 'UTC')::timestamp(3) AS completed_at_finish """
            'FROM agent_hub.invocation_outbox p '
            'JOIN agent_hub.invocation_outbox c ON c.parent_id = p.id JOIN "Job" j ON j."id" = c.job_id '
            "WHERE p.job_id = %s ORDER BY c.id",
            (parent_job_id,),
        ).fetchall()


def run(stack: Stack, w: factories.World) -> dict[str, Any]:
    assert stack.post(w).status_code == 202
    job = stack.wait_job(w.job_id, timeout=60)
    assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
    return job


def test_a_calls_b_and_gets_bs_messages_b_sees_its_own_env_and_has_its_own_succeeded_job(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, CALLER, env={"A_SECRET": "only-for-a"}, prompt="hi B")
    b = make_agent(hub_conn, tmp_path, w.user_id, "bee", CALLER + "hub.send_message('prompt=' + hub.get_prompt())\n",
                   {"B_VAR": "b-value"})
    set_env(hub_conn, w.agent_id, "CALL", b)
    run(stack, w)
    result = result_of(stack.messages(w.session_id))
    assert result["status"] == "succeeded" and "error" not in result
    assert result["messages"][0] == 'env={"B_VAR": "b-value"}'  # B's env, none of A's
    assert json.loads(result["messages"][1][len("prompt="):]) == {"asked_by": "echo", "prompt": "hi B"}
    assert result["output"] == result["messages"][-1] and len(result["messages"]) == 2

    [child] = child_jobs(stack, w.job_id)
    assert child["id"] == result["job_id"]
    assert (child["status"], child["type"], child["agentId"], child["userId"], child["sessionId"]) == (
        "SUCCEEDED", "AGENT_INVOCATION", b, w.user_id, None)
    assert child["progress"] == 100 and child["completed_at_finish"] is True  # completedAt: the child row's finish
    assert child["depth"] == 1 and child["agent_chain"] == [w.agent_id, b] and child["outbox_status"] == "succeeded"
    child_logs = [e["message"] for e in stack.job_logs(child["id"])]
    assert any(f"called by agent {w.agent_id}" in m for m in child_logs)
    assert "run finished: succeeded" in child_logs
    parent_logs = [e["message"] for e in stack.job_logs(w.job_id)]
    assert any(f"child job {child['id']} finished succeeded" in m for m in parent_logs)
    assert stack.outbox(w.job_id)["result"]["agent_calls"] == 1
    # The child wrote no chat message anywhere: it has no session.
    with stack.connect() as c:
        row = c.execute('SELECT count(*) AS n FROM "ChatMessage" WHERE "content" LIKE %s', ('env={"B_VAR"%',)).fetchone()
        first = c.execute("SELECT e.actor, e.reason, e.to_status::text AS to_status FROM agent_hub.invocation_outbox_event e "
                          "JOIN agent_hub.invocation_outbox o ON o.id = e.outbox_id WHERE o.job_id = %s ORDER BY e.id LIMIT 1",
                          (child["id"],)).fetchone()
    assert row["n"] == 0
    # its history starts with the dispatcher creating it for its caller, not with "ingress"
    assert first["actor"] == "dispatcher" and first["reason"].startswith("call_agent from outbox row") and \
        first["to_status"] == "running", first


def test_a_calls_b_calls_a_is_refused_as_a_cycle_and_nothing_crashes(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, CALLER, prompt="loop")
    b = make_agent(hub_conn, tmp_path, w.user_id, "bee", CALLER, {"CALL": w.agent_id})
    set_env(hub_conn, w.agent_id, "CALL", b)
    run(stack, w)
    outer = result_of(stack.messages(w.session_id))
    assert outer["status"] == "succeeded"
    inner = result_of(outer["messages"])
    assert inner["status"] == "failed" and "already in the call chain" in inner["error"] and inner["messages"] == []
    assert len(child_jobs(stack, w.job_id)) == 1  # B ran; the refused call to A made no Job


def test_depth_four_is_refused_and_depth_three_runs(stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path) -> None:
    w = agent_with_code(hub_conn, tmp_path, CALLER, prompt="deep")
    chain = [make_agent(hub_conn, tmp_path, w.user_id, f"level{i}", CALLER, {}) for i in range(1, 5)]
    for caller, callee in zip([w.agent_id, *chain[:-1]], chain, strict=True):
        set_env(hub_conn, caller, "CALL", callee)
    run(stack, w)
    depth1 = result_of(stack.messages(w.session_id))
    depth2 = result_of(depth1["messages"])
    depth3 = result_of(depth2["messages"])
    depth4 = result_of(depth3["messages"])
    assert [depth1["status"], depth2["status"], depth3["status"]] == ["succeeded"] * 3
    assert depth4["status"] == "failed" and "depth 4" in depth4["error"] and "HUB_MAX_AGENT_DEPTH (3)" in depth4["error"]
    with stack.connect() as c:
        ran = c.execute('SELECT count(*) AS n FROM "Job" WHERE "agentId" = %s', (chain[3],)).fetchone()["n"]
    assert ran == 0  # the depth-4 agent never got a Job


def test_a_failing_child_gives_a_failed_result_and_a_failed_child_job_with_its_own_logs(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, CALLER, prompt="go")
    broken = "import hub\nhub.send_message('about to fail')\nraise RuntimeError('b broke')\n"
    b = make_agent(hub_conn, tmp_path, w.user_id, "broken", broken, {})
    set_env(hub_conn, w.agent_id, "CALL", b)
    run(stack, w)
    result = result_of(stack.messages(w.session_id))
    assert result["status"] == "failed" and "RuntimeError: b broke" in result["error"]
    assert result["messages"] == ["about to fail"]
    [child] = child_jobs(stack, w.job_id)
    assert child["status"] == "FAILED" and "RuntimeError: b broke" in child["errorMessage"]
    assert child["outbox_status"] == "failed" and child["result"]["attempts"] == 1
    assert any("b broke" in e["message"] for e in stack.job_logs(child["id"]))


def test_calling_an_unknown_agent_gives_a_failed_result_not_a_crash(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, CALLER, env={"CALL": "no-such-agent"})
    run(stack, w)
    result = result_of(stack.messages(w.session_id))
    error = "call_agent failed: agent no-such-agent does not exist"
    assert result == {"status": "failed", "messages": [], "output": None, "error": error}
    assert child_jobs(stack, w.job_id) == []


def test_a_childs_time_comes_out_of_the_callers_and_with_none_left_the_call_is_refused(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    caller = ("import json, hub\nenv = hub.get_env_vars()\n"
              "for _ in range(2):\n    hub.send_message('result=' + json.dumps(hub.call_agent(env['CALL'], 'spin')))\n")
    w = agent_with_code(hub_conn, tmp_path, caller)
    looper = make_agent(hub_conn, tmp_path, w.user_id, "looper", "while True:\n    pass\n", {})
    set_env(hub_conn, w.agent_id, "CALL", looper)
    stack.dispatchers[0].stop()  # a dispatcher with a 4 s run limit for this test; the module's is started again below
    short = stack.add_dispatcher(AGENT_RUN_TIMEOUT_MS="4000", HUB_CHILD_TIME_MARGIN_MS="2000")
    try:
        run(stack, w)
    finally:
        short.stop()
        stack.add_dispatcher()
    first, second = (json.loads(m[len("result="):]) for m in stack.messages(w.session_id))
    # The child got what was left of the caller's 4 s minus the 2 s margin, and timed out within it.
    assert first["status"] == "failed" and "timed out after" in first["error"]
    assert float(first["error"].split("timed out after ")[1].split(" s")[0]) < 2.0
    [child] = child_jobs(stack, w.job_id)
    assert child["status"] == "FAILED" and child["id"] == first["job_id"]
    assert second["status"] == "failed" and "not enough of the caller's run time left" in second["error"]
    assert "job_id" not in second


def test_cancelling_the_child_job_on_the_hub_stops_the_child_and_the_caller_gets_cancelled(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, CALLER)
    # Its progress line (on its own Job) shows it has started in Piston.
    sleeper = make_agent(hub_conn, tmp_path, w.user_id, "sleeper",
                         "import time, hub\nhub.set_progress(1, 'in the sandbox')\nhub.send_message('started')\n"
                         "time.sleep(60)\n", {})
    set_env(hub_conn, w.agent_id, "CALL", sleeper)
    assert stack.post(w).status_code == 202
    children = wait_until(lambda: [c for c in child_jobs(stack, w.job_id) if c["statusMessage"] == "in the sandbox"],
                          what="the child to run in Piston", details=stack.logs)
    # What Next.js does to cancel a Job.
    hub_conn.execute('UPDATE "Job" SET "status" = \'CANCELLED\' WHERE "id" = %s', (children[0]["id"],))
    job = stack.wait_job(w.job_id, timeout=30)
    assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
    result = result_of(stack.messages(w.session_id))
    assert result["status"] == "cancelled" and result["job_id"] == children[0]["id"]
    assert child_jobs(stack, w.job_id)[0]["outbox_status"] == "cancelled"
