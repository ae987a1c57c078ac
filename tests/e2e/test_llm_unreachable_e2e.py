"""End to end: Gemini unreachable (GEMINI_BASE_URL on a port nobody listens on). hub.call_llm raises
hub.LLMError with kind "unavailable" after the dispatcher's retries; the agent catches it, says so, and
goes on (docs/llm-and-agent-calls.md)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.localpiston_proc import free_port
from tests.stack import Stack, agent_with_code

AGENT = """
import hub
try:
    hub.call_llm("are you there?")
    hub.send_message("answered")
except hub.LLMError as exc:
    hub.send_message("llm-error kind=" + exc.kind)
hub.send_message("carried on")
"""


def test_an_unreachable_gemini_is_llm_error_unavailable_which_the_agent_catches(db_url: str, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # bound and released: connections are refused
    stack = Stack(db_url, dispatcher_env={
        "PISTON_TRANSPORT": "ws",
        "GEMINI_API_KEY": "AIzaFAKE-unreachable-endpoint-key",
        "GEMINI_BASE_URL": closed,
        "HUB_LLM_RETRY_ATTEMPTS": "2",
        "HUB_LLM_RETRY_BASE_S": "0.05",
        "HUB_LLM_RETRY_MAX_S": "0.1",
    }).start()
    try:
        with stack.connect() as conn:
            w = agent_with_code(conn, tmp_path, AGENT)
        assert stack.post(w).status_code == 202
        job = stack.wait_job(w.job_id)
        assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
        assert stack.messages(w.session_id) == ["llm-error kind=unavailable", "carried on"]
        llm = stack.outbox(w.job_id)["result"]["llm"]
        assert (llm["calls"], llm["failed"]) == (1, 1), llm
        logs = [e["message"] for e in stack.job_logs(w.job_id) if e["message"].startswith("llm call")]
        # Retried once (a connection error is transient), then given up as unavailable.
        assert len(logs) == 2 and "unavailable" in logs[0] and "retrying" in logs[0], logs
        assert "failed (unavailable)" in logs[1], logs
    finally:
        stack.close()
