"""With PISTON_TRANSPORT=auto (the default) the agent is told the transport really used."""

from __future__ import annotations

from pathlib import Path

from tests.stack import Stack, agent_with_code

AGENT = """
import hub
try:
    hub.call_llm("hi")
except hub.LLMError as exc:
    hub.send_message("llm-error:" + exc.kind)
except hub.HubError as exc:
    hub.send_message("hub-error:" + str(exc))
"""


def test_auto_transport_on_a_websocket_piston_lets_the_agent_make_relay_calls(db_url: str, tmp_path: Path) -> None:
    # No Gemini key is configured: over the WebSocket the call reaches the dispatcher, which answers
    # not_configured; had the hub been told "auto"/"execute" it would refuse locally with HubError.
    stack = Stack(db_url, dispatcher_env={"PISTON_TRANSPORT": "auto", "GEMINI_API_KEY": ""}).start()
    try:
        with stack.connect() as conn:
            w = agent_with_code(conn, tmp_path, AGENT)
        assert stack.post(w).status_code == 202
        job = stack.wait_job(w.job_id)
        assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
        assert stack.messages(w.session_id) == ["llm-error:not_configured"]
        assert stack.outbox(w.job_id)["result"]["transport"] == "ws"
    finally:
        stack.close()
