"""End to end, streaming: real agent code in localpiston (WebSocket transport), the real dispatcher, the fakegemini
stand-in streaming its answer in several chunks (``streamGenerateContent?alt=sse``), the real web process, and a
real SSE client (tests/sse_client.py) on its /api/jobs/<jobId>/events and /api/sessions/<sessionId>/events."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from tests.e2e.test_sse_web_process import sse
from tests.fakegemini_proc import FakeGemini
from tests.sse_client import Event
from tests.stack import Stack, agent_with_code

KEY = "AIzaFAKE-" + secrets.token_hex(16)
CHUNKS = 5
CHUNK_DELAY_MS = 150  # well apart: each chunk is its own delta, and the first arrives long before the job ends

STREAMED_ANSWER = """
import hub
hub.send_message(hub.call_llm("tell me a story " + hub.get_job_id(), stream=True))
"""

PROGRESS_THEN_WAIT = """
import time
import hub
hub.set_progress(40, "half way")
time.sleep(2)
hub.send_message("done")
"""

BROKEN_STREAM = """
import hub
try:
    hub.send_message(hub.call_llm("tell me [fake:cut=2] " + hub.get_job_id(), stream=True))
except hub.LLMError as exc:
    hub.log("stream failed: " + exc.kind)
"""

CRASH_MID_STREAM = """
import os
import hub

def chunks():
    yield "first "
    yield "second"
    os._exit(3)  # the agent dies before its message ends

hub.send_message(chunks())
"""


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    fake = FakeGemini(KEY).start()
    requests.post(fake.url + "/_control/stream", json={"chunks": CHUNKS, "delay_ms": CHUNK_DELAY_MS},
                  timeout=5).raise_for_status()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def stack(module_db_url: str, gemini: FakeGemini) -> Iterator[Stack]:
    s = Stack(module_db_url, dispatcher_env={
        "PISTON_TRANSPORT": "ws",
        "GEMINI_API_KEY": KEY,
        "GEMINI_BASE_URL": gemini.url,
    }).start()
    yield s
    s.close()


def job_status(stack: Stack, job_id: str) -> str:
    return str(stack.job(job_id)["status"])


def test_a_streamed_answer_reaches_a_job_stream_as_deltas_while_the_job_runs_then_message_and_status(
    stack: Stack, gemini: FakeGemini, hub_conn: psycopg.Connection, tmp_path: Path,
) -> None:
    w = agent_with_code(hub_conn, tmp_path, STREAMED_ANSWER)
    url = f"{stack.web_url}/api/jobs/{w.job_id}/events"
    got: list[Event] = []
    status_at_first_delta = None
    with requests.get(url, stream=True, timeout=60) as resp:
        assert resp.status_code == 200
        assert stack.post(w).status_code == 202
        for event in sse(resp):  # the stream ends by itself after the terminal status
            if event.event == "delta" and status_at_first_delta is None:
                status_at_first_delta = job_status(stack, w.job_id)
            got.append(event)
    assert status_at_first_delta == "PROCESSING", stack.logs()  # deltas came before the job ended

    kinds = [e.event for e in got]
    deltas = [e for e in got if e.event == "delta"]
    [message] = [e for e in got if e.event == "message"]
    assert kinds[0] == "status" and got[0].json()["status"] == "PROCESSING"
    assert got[-1].event == "status" and got[-1].json()["status"] == "SUCCEEDED"
    assert len(deltas) >= 3, kinds  # the stand-in's 5 chunks, 150 ms apart: batched per ~25 ms, so mostly apart
    assert kinds.index("message") > kinds.index("delta") and all(got.index(d) < got.index(message) for d in deltas)
    assert [d.json()["index"] for d in deltas] == list(range(len(deltas)))
    assert {d.json()["messageId"] for d in deltas} == {message.json()["messageId"]}
    text = message.json()["content"]
    assert "".join(d.json()["text"] for d in deltas) == text
    assert text.startswith("[canned]") and w.job_id in text
    assert stack.messages(w.session_id) == [text]  # the ChatMessage row holds the whole text
    seen = gemini.requests(containing=w.job_id)
    assert len(seen) == 1 and ":streamGenerateContent" in seen[0]["path"] and len(seen[0]["chunk_sent_at"]) == CHUNKS
    ids = [int(e.id or 0) for e in got]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    # A second client resuming after the first delta gets every later event exactly once, then the stream ends.
    first = deltas[0].id
    assert first is not None
    with requests.get(url, headers={"Last-Event-ID": first}, stream=True, timeout=60) as late:
        again = list(sse(late))
    assert [e.id for e in again] == [e.id for e in got if int(e.id or 0) > int(first)]
    assert [(e.event, e.data) for e in again] == [(e.event, e.data) for e in got if int(e.id or 0) > int(first)]


def test_set_progress_reaches_an_open_session_stream_while_the_job_is_processing(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path,
) -> None:
    w = agent_with_code(hub_conn, tmp_path, PROGRESS_THEN_WAIT)
    with requests.get(f"{stack.web_url}/api/sessions/{w.session_id}/events", stream=True, timeout=60) as resp:
        assert resp.status_code == 200
        assert stack.post(w).status_code == 202
        progress = next(e for e in sse(resp) if e.event == "progress")
        status_then = job_status(stack, w.job_id)
    assert progress.json() == {"jobId": w.job_id, "progress": 40, "statusMessage": "half way"}
    assert status_then == "PROCESSING"
    assert stack.wait_job(w.job_id)["status"] == "SUCCEEDED"


def test_a_stream_that_breaks_midway_raises_llm_error_in_the_agent_and_keeps_what_came_as_the_message(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path,
) -> None:
    w = agent_with_code(hub_conn, tmp_path, BROKEN_STREAM)
    assert stack.post(w).status_code == 202
    assert stack.wait_job(w.job_id)["status"] == "SUCCEEDED"
    [kept] = stack.messages(w.session_id)
    assert kept.startswith("[canned]")  # the two chunks that came before the error
    logs = [e["message"] for e in stack.job_logs(w.job_id)]
    assert "agent: stream failed: unavailable" in logs


def test_an_agent_that_dies_mid_message_leaves_what_it_streamed_as_the_message_and_a_joblog_line_saying_so(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path,
) -> None:
    w = agent_with_code(hub_conn, tmp_path, CRASH_MID_STREAM)
    url = f"{stack.web_url}/api/jobs/{w.job_id}/events"
    with requests.get(url, stream=True, timeout=60) as resp:
        assert stack.post(w).status_code == 202
        got = list(sse(resp))
    assert stack.job(w.job_id)["status"] == "FAILED"
    assert stack.messages(w.session_id) == ["first second"]
    assert any("was cut" in e["message"] for e in stack.job_logs(w.job_id))
    kinds = [e.event for e in got]
    assert "delta" in kinds and kinds.index("delta") < kinds.index("message")
    assert [e.json()["content"] for e in got if e.event == "message"] == ["first second"]
    assert got[-1].event == "status" and got[-1].json()["status"] == "FAILED"
