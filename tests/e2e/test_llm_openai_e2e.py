"""End to end: hub.call_llm with openai:<name> models from real agent code in localpiston, through the real dispatcher
and the official openai SDK, to the fakeopenai stand-in; Gemini (fakegemini) beside it for unprefixed names.

This stack's HUB_LLM_MODEL names an openai: model, so an agent that names no model goes to the OpenAI-compatible
endpoint too. Every prompt carries the job id, so each stand-in's request log can be filtered per test.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests import factories
from tests.fakegemini_proc import FakeGemini
from tests.fakeopenai_proc import FakeOpenAI
from tests.stack import Stack, agent_with_code

OPENAI_KEY = "sk-fake-e2e-" + secrets.token_hex(16)
GEMINI_KEY = "AIzaFAKE-" + secrets.token_hex(16)

KIND_OF = """
import hub
try:
    hub.send_message(hub.call_llm({prompt!r} + " " + hub.get_job_id(), model="openai:gpt-4o-mini"))
except hub.LLMError as exc:
    hub.send_message("kind=" + exc.kind)
"""


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(OPENAI_KEY).start()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    fake = FakeGemini(GEMINI_KEY).start()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def stack(module_db_url: str, openai_fake: FakeOpenAI, gemini: FakeGemini) -> Iterator[Stack]:
    s = Stack(module_db_url, dispatcher_env={
        "PISTON_TRANSPORT": "ws",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": openai_fake.base_url,
        "GEMINI_API_KEY": GEMINI_KEY,
        "GEMINI_BASE_URL": gemini.url,
        "HUB_LLM_MODEL": "openai:gpt-4o-mini",
        "HUB_LLM_RETRY_BASE_S": "0.05",
        "HUB_LLM_RETRY_MAX_S": "0.2",
    }).start()
    yield s
    s.close()


def run(stack: Stack, w: factories.World) -> dict:
    assert stack.post(w).status_code == 202
    job = stack.wait_job(w.job_id)
    assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
    return job


def test_openai_models_answer_through_the_sdk_with_their_usage_recorded_and_gemini_names_still_go_to_gemini(
    stack: Stack, openai_fake: FakeOpenAI, gemini: FakeGemini, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    code = """
import hub
job = hub.get_job_id()
hub.send_message(hub.call_llm("first for " + job, model="openai:gpt-4o-mini", system="Be brief.",
                              temperature=0.3, max_output_tokens=300))
hub.send_message(hub.call_llm("second for " + job))  # HUB_LLM_MODEL: openai:gpt-4o-mini
hub.send_message(hub.call_llm("third for " + job, model="gemini-2.5-flash"))
"""
    w = agent_with_code(hub_conn, tmp_path, code)
    run(stack, w)
    msgs = stack.messages(w.session_id)
    seen = openai_fake.requests(containing=w.job_id)
    assert len(seen) == 2 and all(r["status"] == 200 and r["key_ok"] for r in seen)
    assert [r["model"] for r in seen] == ["gpt-4o-mini", "gpt-4o-mini"]  # the prefix is the hub's, not the endpoint's
    first = seen[0]["body"]
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}
    assert first["messages"][-1]["role"] == "user" and first["messages"][-1]["content"].startswith("first for")
    assert (first["temperature"], first["max_completion_tokens"]) == (0.3, 300)
    [gemini_seen] = gemini.requests(containing=w.job_id)
    assert gemini_seen["model"] == "gemini-2.5-flash"
    assert [m.split(" ")[:2] for m in msgs] == [["[canned]", "gpt-4o-mini"], ["[canned]", "gpt-4o-mini"],
                                                  ["[canned]", "gemini-2.5-flash"]]

    llm = stack.outbox(w.job_id)["result"]["llm"]
    assert llm["models"] == {"openai:gpt-4o-mini": 2, "gemini-2.5-flash": 1}
    openai_calls = llm["per_call"][:2]
    assert [c["prompt_tokens"] for c in openai_calls] == [r["usage"]["prompt_tokens"] for r in seen]
    assert [c["output_tokens"] for c in openai_calls] == [r["usage"]["completion_tokens"] for r in seen]
    assert [c["total_tokens"] for c in openai_calls] == [r["usage"]["total_tokens"] for r in seen]
    assert llm["total_tokens"] == sum(c["total_tokens"] for c in llm["per_call"]) > 0
    lines = [e["message"] for e in stack.job_logs(w.job_id) if e["message"].startswith("llm call")]
    assert [line.split(",")[0] for line in lines] == [
        "llm call 1: openai:gpt-4o-mini ok", "llm call 2: openai:gpt-4o-mini ok", "llm call 3: gemini-2.5-flash ok"]


def test_a_429_from_the_openai_endpoint_is_retried_and_then_answers(
    stack: Stack, openai_fake: FakeOpenAI, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, KIND_OF.format(prompt="busy [fake:error=429 times=1]"))
    run(stack, w)
    assert stack.messages(w.session_id)[0].startswith("[canned]")
    assert [r["status"] for r in openai_fake.requests(containing=w.job_id)] == [429, 200]
    llm = stack.outbox(w.job_id)["result"]["llm"]
    assert llm["per_call"][0]["tries"] == 2 and llm["per_call"][0]["ok"]
    assert any("rate_limited" in e["message"] and "retrying" in e["message"] for e in stack.job_logs(w.job_id))


def test_a_rejected_openai_key_is_kind_auth_in_the_agent_and_is_not_retried(
    stack: Stack, openai_fake: FakeOpenAI, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, KIND_OF.format(prompt="who am i"))
    openai_fake.set_key("sk-other-" + secrets.token_hex(8))  # the dispatcher's key is now refused, like a revoked one
    try:
        run(stack, w)
    finally:
        openai_fake.set_key(OPENAI_KEY)
    assert stack.messages(w.session_id) == ["kind=auth"]
    seen = openai_fake.requests(containing=w.job_id)
    assert len(seen) == 1 and seen[0]["status"] == 401 and not seen[0]["key_ok"]
    assert stack.outbox(w.job_id)["result"]["llm"]["per_call"][0]["kind"] == "auth"


def test_the_openai_key_is_never_in_the_sandbox_nor_in_any_log_or_row(
    stack: Stack, openai_fake: FakeOpenAI, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    code = r"""
import json, os, hub
hub.send_message("environ=" + json.dumps(dict(os.environ)))
with open("/proc/self/environ", "rb") as f:
    hub.send_message("proc=" + f.read().decode("utf-8", "replace"))
for root, dirs, files in os.walk(os.getcwd()):
    for name in files:
        with open(os.path.join(root, name), "rb") as f:
            hub.send_message("file " + name + "=" + f.read().decode("utf-8", "replace"))
hub.send_message(hub.call_llm("a call so the key is used " + hub.get_job_id(), model="openai:gpt-4o-mini"))
"""
    w = agent_with_code(hub_conn, tmp_path, code)
    run(stack, w)
    openai_fake.set_key("sk-other-" + secrets.token_hex(8))  # an auth failure too: its error text must not carry the key
    try:
        w2 = agent_with_code(hub_conn, tmp_path, KIND_OF.format(prompt="leak?"))
        run(stack, w2)
    finally:
        openai_fake.set_key(OPENAI_KEY)
    msgs = stack.messages(w.session_id)
    assert any(m.startswith("environ=") and "PATH" in m for m in msgs)
    assert any(m.startswith("file _hub_context.json=") and '"nonce"' in m for m in msgs)
    assert msgs[-1].startswith("[canned]")
    assert all(OPENAI_KEY not in m for m in msgs)
    assert stack.messages(w2.session_id) == ["kind=auth"]
    everything = [stack.logs(), openai_fake.output()]
    with stack.connect() as c:
        for table in ('"JobLog"', '"ChatMessage"', '"Job"', "agent_hub.invocation_outbox",
                      "agent_hub.invocation_outbox_event"):
            everything.append(json.dumps([dict(r) for r in c.execute(f"SELECT * FROM {table}").fetchall()], default=str))
    assert all(OPENAI_KEY not in text for text in everything)


def test_a_streamed_openai_answer_reaches_the_agent_in_chunks_and_becomes_the_whole_message(
    stack: Stack, openai_fake: FakeOpenAI, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    code = """
import hub
chunks = list(hub.call_llm("stream for " + hub.get_job_id(), model="openai:gpt-4o-mini", stream=True))
hub.log("chunks=" + str(len(chunks)))
hub.send_message("".join(chunks))
"""
    w = agent_with_code(hub_conn, tmp_path, code)
    run(stack, w)
    [text] = stack.messages(w.session_id)
    assert w.job_id in text
    [sent] = openai_fake.requests(containing=w.job_id)
    assert sent["body"]["stream"] is True and sent["body"]["stream_options"] == {"include_usage": True}
    logs = [e["message"] for e in stack.job_logs(w.job_id)]
    assert "agent: chunks=3" in logs  # the stand-in's three pieces, one chunk line each
    llm = stack.outbox(w.job_id)["result"]["llm"]
    assert llm["calls"] == 1 and llm["per_call"][0]["ok"] and llm["total_tokens"] == sent["usage"]["total_tokens"]
