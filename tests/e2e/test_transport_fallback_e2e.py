"""PISTON_TRANSPORT=auto against a Piston with no /api/v2/connect (a proxy in front of it drops WebSocket
upgrades): the dispatcher's runner falls back to /execute, rebuilding the bundle so the hub inside the
sandbox knows it is on the batch transport, and the invocation succeeds."""

from __future__ import annotations

from pathlib import Path

from tests import factories
from tests.stack import Stack, agent_with_code

AGENT = """
import hub
hub.send_message("before")
try:
    hub.call_llm("hi")
    hub.send_message("llm answered")
except hub.LLMError as exc:
    hub.send_message("llm-error:" + exc.kind)
except hub.HubError as exc:
    hub.send_message("hub-error:" + str(exc))
hub.send_message("after")
"""

# What the hub raises locally when it was told the run uses the batch transport (hubpy/hub/__init__.py).
EXECUTE_ONLY = ("hub-error:call_llm requires the WebSocket transport (PISTON_TRANSPORT=ws); "
                "this run uses the batch /execute transport")
FALLBACK_LOG = "Piston has no WebSocket endpoint; using the batch /execute transport"


def test_auto_transport_without_a_websocket_endpoint_falls_back_to_execute_and_tells_the_hub(
    db_url: str, tmp_path: Path
) -> None:
    # No Gemini key: had the hub been told "ws", call_llm would try the relay instead of refusing locally.
    stack = Stack(db_url, piston_env={"PISTON_DISABLE_WEBSOCKET": "true"},
                  dispatcher_env={"PISTON_TRANSPORT": "auto", "GEMINI_API_KEY": ""}).start()
    try:
        with stack.connect() as conn:
            first = agent_with_code(conn, tmp_path, AGENT)
            second = factories.next_turn(conn, first, "again")
        assert stack.post(first).status_code == 202
        job = stack.wait_job(first.job_id)
        assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
        assert stack.messages(first.session_id) == ["before", EXECUTE_ONLY, "after"]
        row = stack.outbox(first.job_id)
        assert (row["attempts"], row["result"]["transport"]) == (1, "execute")
        logs = [e["message"] for e in stack.job_logs(first.job_id)]
        started = [m for m in logs if m.startswith("run started:")]
        assert len(started) == 1 and started[0].endswith("transport ws"), logs  # tried first, refused at the handshake
        assert FALLBACK_LOG in logs[logs.index(started[0]):], logs

        # The dispatcher remembers: the next run goes to /execute at once, without trying the WebSocket again.
        assert stack.post(second).status_code == 202
        job = stack.wait_job(second.job_id)
        assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
        assert stack.messages(first.session_id) == ["before", EXECUTE_ONLY, "after"] * 2
        assert stack.outbox(second.job_id)["result"]["transport"] == "execute"
        logs = [e["message"] for e in stack.job_logs(second.job_id)]
        assert FALLBACK_LOG not in logs, logs
        assert any(m.startswith("run started:") and m.endswith("transport execute") for m in logs), logs
    finally:
        stack.close()
