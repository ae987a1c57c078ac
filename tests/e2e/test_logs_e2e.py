"""Structured logs, end to end: every dispatcher line about an invocation carries its ids, every
web line its request_id, and no line carries a secret (agent env var values, prompt text, the
Gemini key) — read from the JSON lines the real processes print.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakegemini_proc import FakeGemini
from tests.stack import Stack, agent_with_code
from tests.waiting import wait_until

GEMINI_KEY = "AIzaSy-log-test-secret-4f1c9"
ENV_SECRET = "env-secret-value-8b2e7d"
PROMPT = "prompt-text-that-must-not-be-logged-31a7"
INVOCATION_IDS = ("job_id", "outbox_id", "agent_id", "attempt")
WEB_STARTUP_EVENTS = ("unauthenticated",)

AGENT = """
import hub
hub.log("agent side log line")
hub.set_progress(30, "thinking")
answer = hub.call_llm("Summarise: " + hub.get_prompt(), system="brief")
hub.send_message("llm said " + answer[:20])
hub.send_message("env " + str(len(hub.get_env_vars()["TOKEN"])))
print("plain output", hub.get_prompt())
"""
FAILING = "import hub\nraise RuntimeError('boom ' + hub.get_env_vars()['TOKEN'])\n"


@pytest.fixture(scope="module")
def fakegemini() -> Iterator[str]:
    server = FakeGemini(GEMINI_KEY).start()
    yield server.url
    server.close()


@pytest.fixture(scope="module")
def stack(module_db_url: str, fakegemini: str) -> Iterator[Stack]:
    s = Stack(module_db_url, dispatcher_env={"PISTON_TRANSPORT": "ws", "GEMINI_API_KEY": GEMINI_KEY,
                                             "GEMINI_BASE_URL": fakegemini, "LOG_LEVEL": "debug"}).start()
    yield s
    s.close()


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def test_every_invocation_line_has_its_ids_and_no_line_has_a_secret(stack: Stack, tmp_path: Path) -> None:
    with stack.connect() as conn:
        ok = agent_with_code(conn, tmp_path / "ok", AGENT, env={"TOKEN": ENV_SECRET}, prompt=PROMPT)
        bad = agent_with_code(conn, tmp_path / "bad", FAILING, env={"TOKEN": ENV_SECRET}, prompt=PROMPT)
    for w in (ok, bad):
        resp = requests.post(stack.web_url + w.invoke_path, json=w.invoke_body(), timeout=10,
                             headers={"X-Request-ID": f"req-{w.job_id}", **getattr(stack, "auth_headers", {})})
        assert resp.status_code == 202, resp.text
    assert stack.wait_job(ok.job_id)["status"] == "SUCCEEDED", stack.logs()
    assert stack.wait_job(bad.job_id)["status"] == "FAILED"

    def both_runs_done() -> bool:  # run_done is logged just after the final write
        done = {line.get("job_id") for line in json_lines(stack.dispatchers[0].output()) if line.get("event") == "run_done"}
        return {ok.job_id, bad.job_id} <= done

    wait_until(both_runs_done, what="both run_done lines", details=stack.logs)
    dispatcher_text = stack.dispatchers[0].output()
    web_text = stack.web.output() if stack.web else ""

    for text in (dispatcher_text, web_text):
        for secret in (GEMINI_KEY, ENV_SECRET, PROMPT):
            assert secret not in text, f"a secret reached the logs:\n{text}"

    lines = json_lines(dispatcher_text)
    per_job = {w.job_id: [line for line in lines if line.get("job_id") == w.job_id] for w in (ok, bad)}
    for w in (ok, bad):
        events = [line["event"] for line in per_job[w.job_id]]
        assert "run_done" in events, events
    assert "llm_call" in [line["event"] for line in per_job[ok.job_id]]
    # A line that names any invocation id names them all (piston, llm, write-back, worker lines alike).
    invocation_lines = [line for line in lines if any(k in line for k in INVOCATION_IDS)]
    assert len(invocation_lines) >= 4
    for line in invocation_lines:
        missing = [k for k in INVOCATION_IDS if line.get(k) in (None, "")]
        assert not missing, f"{line} lacks {missing}"
    # And every line logged while a run was going on is one of those (no unbound line in the run threads).
    unbound = [line for line in lines if not any(k in line for k in INVOCATION_IDS)
               and line.get("event") not in ("dispatcher_started", "dispatcher_stopped", "draining",
                                             "shutdown_requested", "listener_connected", "listening")]
    assert not unbound, unbound

    web = json_lines(web_text)
    requests_ = [line for line in web if line.get("event") == "request"]
    # Lines outside a request are the startup ones (e.g. the INGRESS_TOKEN warning); all others are per request.
    unbound_web = [line for line in web if not line.get("request_id") and line.get("event") not in WEB_STARTUP_EVENTS]
    assert requests_ and not unbound_web, unbound_web
    queued = [line for line in web if line.get("event") == "invocation_queued"]
    assert {line["request_id"] for line in queued} == {f"req-{ok.job_id}", f"req-{bad.job_id}"}
