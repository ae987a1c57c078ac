"""End to end: hub.call_llm from real agent code in localpiston, through the real dispatcher, to the fakegemini stand-in.

Every prompt carries the job id, so the stand-in's request log can be filtered per test.
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
from tests.stack import Stack, agent_with_code

KEY = "AIzaFAKE-" + secrets.token_hex(16)

TWO_CALLS = """
import hub
job = hub.get_job_id()
a = hub.call_llm("first question for " + job)
b = hub.call_llm("second question for " + job, system="Be brief.", temperature=0.2, max_output_tokens=500)
hub.send_message(a)
hub.send_message(b)
"""

KIND_OF = """
import hub
try:
    hub.send_message(hub.call_llm({prompt!r} + " " + hub.get_job_id()))
except hub.LLMError as exc:
    hub.send_message("kind=" + exc.kind)
"""


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    fake = FakeGemini(KEY).start()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def stack(module_db_url: str, gemini: FakeGemini) -> Iterator[Stack]:
    s = Stack(module_db_url, dispatcher_env={
        "PISTON_TRANSPORT": "ws",
        "GEMINI_API_KEY": KEY,
        "GEMINI_BASE_URL": gemini.url,
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


def test_two_llm_calls_become_messages_and_the_recorded_tokens_equal_the_stand_ins(
    stack: Stack, gemini: FakeGemini, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, TWO_CALLS)
    run(stack, w)
    msgs = stack.messages(w.session_id)
    seen = gemini.requests(containing=w.job_id)
    assert len(seen) == 2 and all(r["status"] == 200 and r["key_ok"] for r in seen)
    assert len(msgs) == 2 and all(m.startswith("[canned]") for m in msgs)
    assert "first question for" in msgs[0] and "second question for" in msgs[1]
    # What the SDK sent: the prompt as a user turn, the system instruction and the generation settings.
    second = seen[1]["body"]
    assert second["contents"][-1]["role"] == "user"
    assert second["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert second["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 500}
    assert seen[0]["model"] == "gemini-2.5-flash"

    llm = stack.outbox(w.job_id)["result"]["llm"]
    assert llm["calls"] == 2 and llm["failed"] == 0
    assert [c["prompt_tokens"] for c in llm["per_call"]] == [r["usage"]["promptTokenCount"] for r in seen]
    assert [c["output_tokens"] for c in llm["per_call"]] == [r["usage"]["candidatesTokenCount"] for r in seen]
    assert llm["total_tokens"] == sum(r["usage"]["totalTokenCount"] for r in seen) > 0
    assert llm["prompt_tokens"] + llm["output_tokens"] == llm["total_tokens"]
    assert llm["models"] == {"gemini-2.5-flash": 2}
    lines = [e["message"] for e in stack.job_logs(w.job_id) if e["message"].startswith("llm call")]
    assert len(lines) == 2 and all("gemini-2.5-flash ok" in line for line in lines)
    assert not any("question" in line for line in lines)  # no prompt text in the log


def test_a_429_then_200_succeeds_after_one_retry(
    stack: Stack, gemini: FakeGemini, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, KIND_OF.format(prompt="busy [fake:error=429 times=1]"))
    run(stack, w)
    assert stack.messages(w.session_id)[0].startswith("[canned]")
    assert [r["status"] for r in gemini.requests(containing=w.job_id)] == [429, 200]
    llm = stack.outbox(w.job_id)["result"]["llm"]
    assert llm["per_call"][0]["tries"] == 2 and llm["per_call"][0]["ok"]
    assert any("rate_limited" in e["message"] and "retrying" in e["message"] for e in stack.job_logs(w.job_id))


def test_a_rejected_key_is_kind_auth_in_the_agent_and_is_not_retried(
    stack: Stack, gemini: FakeGemini, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent_with_code(hub_conn, tmp_path, KIND_OF.format(prompt="who am i"))
    gemini.set_key("AIzaOTHER-" + secrets.token_hex(8))  # the dispatcher's key is now invalid, like a revoked key
    try:
        run(stack, w)
    finally:
        gemini.set_key(KEY)
    assert stack.messages(w.session_id) == ["kind=auth"]
    seen = gemini.requests(containing=w.job_id)
    assert len(seen) == 1 and seen[0]["status"] == 400 and not seen[0]["key_ok"]


@pytest.mark.parametrize(
    ("marker", "kind"),
    [("[fake:block]", "blocked"), ("[fake:safety]", "blocked"), ("[fake:max_tokens]", "max_tokens"),
     ("[fake:error=400]", "bad_request")],
    ids=["prompt-blocked", "answer-safety", "max-tokens", "bad-request"],
)
def test_a_blocked_or_refused_answer_surfaces_as_its_kind_without_retry(
    stack: Stack, gemini: FakeGemini, hub_conn: psycopg.Connection, tmp_path: Path, marker: str, kind: str
) -> None:
    w = agent_with_code(hub_conn, tmp_path, KIND_OF.format(prompt=f"tell me {marker}"))
    run(stack, w)
    assert stack.messages(w.session_id) == [f"kind={kind}"]
    assert len(gemini.requests(containing=w.job_id)) == 1
    assert stack.outbox(w.job_id)["result"]["llm"]["per_call"][0]["kind"] == kind


def test_calls_over_hub_max_llm_calls_get_kind_limit_without_reaching_gemini(
    stack: Stack, gemini: FakeGemini, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    code = ("import hub\nkinds = []\nfor i in range(22):\n    try:\n        hub.call_llm(f'n{i} ' + hub.get_job_id())\n"
            "        kinds.append('ok')\n    except hub.LLMError as exc:\n        kinds.append(exc.kind)\n"
            "hub.send_message(','.join(kinds))\n")
    w = agent_with_code(hub_conn, tmp_path, code)
    run(stack, w)
    assert stack.messages(w.session_id) == [",".join(["ok"] * 20 + ["limit"] * 2)]
    assert len(gemini.requests(containing=w.job_id)) == 20


def test_history_true_sends_the_sessions_turns_before_the_prompt(
    stack: Stack, gemini: FakeGemini, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    code = "import hub\nhub.send_message(hub.call_llm('now ' + hub.get_job_id(), history=True))\n"
    w = agent_with_code(hub_conn, tmp_path, code, prompt="first prompt")
    run(stack, w)
    w2 = factories.next_turn(hub_conn, w, "second prompt")
    run(stack, w2)
    body = gemini.requests(containing=w2.job_id)[0]["body"]
    turns = [(c["role"], c["parts"][0]["text"]) for c in body["contents"]]
    assert turns[:3] == [("user", "first prompt"), ("model", stack.messages(w.session_id)[0]), ("user", "second prompt")]
    assert turns[3] == ("user", "now " + w2.job_id)


def test_the_gemini_key_is_never_in_the_sandbox_nor_in_any_log_or_row(
    stack: Stack, gemini: FakeGemini, hub_conn: psycopg.Connection, tmp_path: Path
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
hub.send_message("env_vars=" + json.dumps(hub.get_env_vars()))
hub.call_llm("a call so the key is used " + hub.get_job_id())
"""
    w = agent_with_code(hub_conn, tmp_path, code, env={"AGENT_OWN": "visible-to-the-agent"})
    run(stack, w)
    gemini.set_key("AIzaOTHER-" + secrets.token_hex(8))  # an auth failure too: its error text must not carry the key
    try:
        w2 = agent_with_code(hub_conn, tmp_path, KIND_OF.format(prompt="leak?"))
        run(stack, w2)
    finally:
        gemini.set_key(KEY)
    msgs = stack.messages(w.session_id)
    # The dump worked: it saw the environment, the hub's embedded context and the agent's own secret.
    assert any(m.startswith("environ=") and "PATH" in m for m in msgs)
    assert any(m.startswith("file hub.py=") for m in msgs)
    assert any(m.startswith("file _hub_context.json=") and '"nonce"' in m for m in msgs)
    assert any(m.startswith("file main.py=") for m in msgs)
    assert any("visible-to-the-agent" in m for m in msgs)
    assert all(KEY not in m for m in msgs)
    assert stack.messages(w2.session_id) == ["kind=auth"]
    everything = [stack.logs(), gemini.output()]
    with stack.connect() as c:
        for table in ('"JobLog"', '"ChatMessage"', '"Job"', "agent_hub.invocation_outbox"):
            everything.append(json.dumps([dict(r) for r in c.execute(f"SELECT * FROM {table}").fetchall()], default=str))
    assert all(KEY not in text for text in everything)
    assert all(KEY[9:] not in text for text in everything)  # not even the random part


def test_call_llm_on_the_execute_transport_raises_hub_error_saying_websocket_is_required(
    gemini: FakeGemini, stack: Stack, tmp_path: Path
) -> None:
    code = ("import hub\ntry:\n    hub.call_llm('hi')\nexcept hub.LLMError:\n    hub.send_message('wrong: LLMError')\n"
            "except hub.HubError as exc:\n    hub.send_message('HubError: ' + str(exc))\n")
    stack.dispatchers[0].stop()  # the batch transport needs its own dispatcher; a WebSocket one is started again below
    batch = stack.add_dispatcher(PISTON_TRANSPORT="execute")
    try:
        with stack.connect() as c:
            w = agent_with_code(c, tmp_path, code)
        run(stack, w)
    finally:
        batch.stop()
        stack.add_dispatcher()
    msgs = stack.messages(w.session_id)
    assert len(msgs) == 1 and msgs[0].startswith("HubError: ") and "WebSocket" in msgs[0]
    assert gemini.requests(containing=w.job_id) == []
