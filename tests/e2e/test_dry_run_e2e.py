"""``python -m dispatcher try``: a stored agent run as an invocation would — real Piston, call_llm through the
Gemini stand-in, call_agent — printing what it does and writing nothing to the hub's tables."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import factories
from tests.fakegemini_proc import FakeGemini
from tests.stack import REPO, Stack, agent_with_code

KEY = "fakegemini-dry-run-key-0123456789"
CHILD = "import hub\nhub.send_message('child got ' + hub.get_prompt())\n"
PARENT = """\
import hub
hub.log("starting")
hub.set_progress(10, "warming up")
hub.set_user_var("seen", hub.get_user_vars().get("mood", "none"))
hub.send_message("you said " + hub.get_prompt())
hub.send_message("llm: " + hub.call_llm("say hi"))
hub.send_message("child: " + hub.call_agent(CHILD_ID, "ping")["output"])
hub.send_message("history " + str(len(hub.get_chat_history())))
"""
TABLES = ('"Job"', '"ChatMessage"', '"UserVariable"', '"JobLog"', '"Session"', "agent_hub.invocation_outbox",
          "agent_hub.invocation_outbox_event")


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    fake = FakeGemini(KEY).start()
    yield fake
    fake.close()


@pytest.fixture
def stack(db_url: str) -> Iterator[Stack]:
    s = Stack(db_url, web=False)
    s.piston.start()
    yield s
    s.close()


def counts(stack: Stack) -> dict[str, int]:
    with stack.connect() as conn:
        return {t: conn.execute(f"SELECT count(*) AS n FROM {t}").fetchone()["n"] for t in TABLES}


def try_agent(stack: Stack, gemini: FakeGemini, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(stack.dispatcher_env)
    env.update({"PYTHONPATH": str(REPO), "GEMINI_API_KEY": KEY, "GEMINI_BASE_URL": gemini.url})
    return subprocess.run([sys.executable, "-m", "dispatcher", "try", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_try_prints_what_the_agent_does_and_writes_nothing_to_the_hub(
    stack: Stack, gemini: FakeGemini, tmp_path: Path
) -> None:
    with stack.connect() as conn:
        child = agent_with_code(conn, tmp_path, CHILD)
        parent = agent_with_code(conn, tmp_path, PARENT.replace("CHILD_ID", repr(child.agent_id)))
        factories.chat_message(conn, parent.session_id, "agent", "an earlier answer")
    before = counts(stack)
    res = try_agent(stack, gemini, parent.agent_id, "--prompt", "hello there", "--session", parent.session_id,
                    "--user-var", "mood=sunny")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout.splitlines()
    assert out[0] == f"dry run of agent {parent.agent_id} (nothing is written to the hub)"
    assert "log [info]: agent: starting" in out
    assert "progress: 10% (warming up)" in out
    assert "user var: seen = 'sunny'" in out
    assert "message: you said hello there" in out
    assert any(line.startswith("message: llm: [canned]") for line in out), out
    assert f"call_agent {child.agent_id}: a dry run too" in out
    assert "  message: child got ping" in out  # the child's own lines, indented
    assert "  child finished: succeeded" in out
    assert "message: child: child got ping" in out
    assert "message: history 2" in out  # the session's two messages: a dry run writes no user message either
    assert out[-1] == "finished: succeeded"
    assert counts(stack) == before


def test_try_of_a_failing_agent_exits_1_and_bad_arguments_exit_2(stack: Stack, gemini: FakeGemini, tmp_path: Path) -> None:
    with stack.connect() as conn:
        w = agent_with_code(conn, tmp_path, "raise SystemExit(4)\n")
    before = counts(stack)
    res = try_agent(stack, gemini, w.agent_id, "--prompt", "x")
    assert res.returncode == 1 and res.stdout.splitlines()[-1].startswith("finished: failed"), res.stdout
    for args, message in [((w.agent_id, "--prompt", "x", "--user-var", "novalue"), "--user-var must be KEY=VALUE"),
                          (("no-such-agent", "--prompt", "x"), "no agent 'no-such-agent'"),
                          ((w.agent_id, "--prompt", "x", "--session", "nope"), "no session 'nope'")]:
        bad = try_agent(stack, gemini, *args)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    assert counts(stack) == before
