"""The runner on real Postgres, through the scripted in-process sandbox (dispatcher/sandbox/scripted.py).

Each test claims a real outbox row, runs it with the runner as the worker wires it (``wire_runner``: the
call_llm handler on the real Gemini client against fakegemini, call_agent children through the same
runner) and writes the outcome with the completer, then reads what the hub would see: the Job, its
chat messages, user variables and JobLog lines, and the outbox row. The sandbox plays a script of hub
protocol lines instead of running code, so every event kind and every outcome can be made to happen.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from core.db import Pool
from dispatcher import claim as claims
from dispatcher import leases
from dispatcher import runner as runner_module
from dispatcher.completer import apply_outcome
from dispatcher.config import DispatcherConfig
from dispatcher.control import RunControl, StopReason
from dispatcher.gemini import GeminiClient
from dispatcher.leases import HeldRows
from dispatcher.outcome import Outcome
from dispatcher.runner import FALLBACK_LOG
from dispatcher.sandbox.port import RunStatus, SandboxRefused, SandboxTransient, Transport
from dispatcher.sandbox.scripted import Box, Call, Err, Exit, Fail, Hang, Hub, Out, Reply, ScriptedSandbox, Step
from dispatcher.worker import wire_runner
from dispatcher.writeback import WriteBack
from tests import factories
from tests.fakegemini_proc import FakeGemini
from tests.http_servers import LocalServer, serve
from tests.stack import agent_with_code

KEY = "fake-key-for-the-runner-tests"
SECRET = "sk-runner-test-0123456789"
OWNER = "runner-tests"


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    server = FakeGemini(KEY).start()
    yield server
    server.close()


def message(text: str) -> Hub:
    return Hub({"type": "message", "content": text})


@dataclass
class Ran:
    """One run as the hub sees it afterwards."""

    label: str  # what the completer wrote: succeeded, failed, cancelled, retry_later, released, lease_lost
    outcome: Outcome
    job: dict[str, Any]
    outbox: dict[str, Any]
    messages: list[str]
    logs: list[str]
    user_vars: dict[str, str]


class Harness:
    """One dispatcher's runner, wired as the worker wires it, around one scripted sandbox."""

    def __init__(self, conn: psycopg.Connection, pool: Pool, tmp: Path, sandbox: ScriptedSandbox, **env: str) -> None:
        self.conn, self.pool, self.tmp, self.sandbox = conn, pool, tmp, sandbox
        self.cfg = DispatcherConfig.from_env({
            "DATABASE_URL": "postgresql://unused@127.0.0.1:9/unused", "PISTON_URL": "http://127.0.0.1:9",
            "PISTON_TRANSPORT": "ws", "PISTON_RETRY_ATTEMPTS": "2", "PISTON_RETRY_BASE_S": "0.01",
            "PISTON_RETRY_MAX_S": "0.02", "AGENT_RUN_TIMEOUT_MS": "10000", **env,
        })
        self.held = HeldRows()
        self.queued: set[str] = set()
        self.runner = wire_runner(self.cfg, pool, sandbox, self.held, GeminiClient(self.cfg))

    def world(self, *, env: dict[str, str] | None = None, prompt: str = "hello agent") -> factories.World:
        return agent_with_code(self.conn, self.tmp, "# scripted: this code is never run\n", env=env, prompt=prompt)

    def agent(self, user_id: str, name: str) -> str:
        """Another agent of the same author (for call_agent), with a file of its own."""
        agent_id = factories.agent(self.conn, user_id, name=name)
        path = self.tmp / f"{agent_id}.py"
        path.write_text("# scripted\n")
        factories.agent_file(self.conn, agent_id, "main.py", str(path))
        return agent_id

    def enqueue(self, w: factories.World) -> None:
        factories.enqueue(self.conn, w)
        self.queued.add(w.job_id)

    def claim(self, w: factories.World) -> claims.Claimed:
        if w.job_id not in self.queued:
            self.enqueue(w)
        [row] = claims.claim(self.pool, owner=self.cfg.owner, batch=1, lease_s=self.cfg.lease_s)
        assert row.job_id == w.job_id
        return row

    def run(self, w: factories.World, control: RunControl | None = None) -> Ran:
        """Claim w's row and run it as the worker does: the runner's attempt, then the completer."""
        row = self.claim(w)
        control = control or RunControl()
        wb = WriteBack(self.pool, outbox_id=row.id, job_id=row.job_id, session_id=row.session_id, owner=self.cfg.owner,
                       attempt=row.attempts, on_lost=lambda: control.stop(StopReason.LEASE_LOST))
        with self.held.holding(row.id, control):
            outcome = self.runner.attempt(row, wb, control)
            label = apply_outcome(outcome, row, wb, cfg=self.cfg, pool=self.pool)
        return Ran(label, outcome, self.job(w.job_id), self.outbox(w.job_id), self.messages(w.session_id),
                   self.logs(w.job_id), self.user_vars(w.session_id))

    def beat(self) -> None:
        """One beat of the dispatcher's heartbeat."""
        leases.beat(self.pool, self.held, owner=self.cfg.owner, lease_s=self.cfg.lease_s)

    def job(self, job_id: str) -> dict[str, Any]:
        row = self.conn.execute('SELECT * FROM "Job" WHERE "id" = %s', (job_id,)).fetchone()
        assert row is not None
        return dict(row)

    def outbox(self, job_id: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT *, status::text AS status FROM agent_hub.invocation_outbox WHERE job_id = %s",
                                (job_id,)).fetchone()
        assert row is not None
        return dict(row)

    def messages(self, session_id: str) -> list[str]:
        rows = self.conn.execute("""SELECT "content" FROM "ChatMessage" WHERE "sessionId" = %s AND "role" = 'agent'
                                    ORDER BY "timestamp", "id" """, (session_id,)).fetchall()
        return [r["content"] for r in rows]

    def logs(self, job_id: str) -> list[str]:
        # Lines of one millisecond tie on "timestamp": ctid keeps them in the order they were written (this
        # test's tables only ever grow, one writer at a time).
        rows = self.conn.execute('SELECT "message" FROM "JobLog" WHERE "jobId" = %s ORDER BY "timestamp", ctid',
                                 (job_id,)).fetchall()
        return [r["message"] for r in rows]

    def user_vars(self, session_id: str) -> dict[str, str]:
        rows = self.conn.execute('SELECT "key", "value" FROM "UserVariable" WHERE "sessionId" = %s', (session_id,)).fetchall()
        return {r["key"]: r["value"] for r in rows}

    def cancel_job(self, job_id: str) -> None:
        """What the hub does when the user cancels."""
        self.conn.execute("""UPDATE "Job" SET "status" = 'CANCELLED' WHERE "id" = %s""", (job_id,))


Script = Callable[[Box], list[Step] | Generator[Step, Reply, None]]


@pytest.fixture
def harness(conn: psycopg.Connection, pool: Pool, tmp_path: Path) -> Callable[..., Harness]:
    def make(script: Script, *, websocket: bool = True, **env: str) -> Harness:
        return Harness(conn, pool, tmp_path, ScriptedSandbox(script, websocket=websocket), **env)

    return make


# ---- each event kind ---------------------------------------------------------------------------------


def test_messages_become_the_sessions_agent_messages_in_order_and_the_run_succeeds(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [message("one"), Out("plain print\n"), message("two")])
    w = h.world()
    ran = h.run(w)
    assert (ran.label, ran.job["status"], ran.job["progress"]) == ("succeeded", "SUCCEEDED", 100.0)
    assert ran.messages == ["one", "two"]
    assert (ran.outbox["status"], ran.outbox["result"]["messages"], ran.outbox["result"]["transport"]) == ("succeeded", 2, "ws")
    assert "output (last 2000 characters):\nplain print\n" in ran.logs
    assert ran.logs[-1] == "run finished: succeeded"  # written with the finish, last


def test_the_box_gets_the_runs_context_as_data_beside_hub_py(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [])
    w = h.world(env={"API_KEY": SECRET}, prompt="what is in my box?")
    h.run(w)
    [box] = h.sandbox.runs
    ctx = box.context
    assert (ctx["prompt"], ctx["job_id"], ctx["session_id"]) == ("what is in my box?", w.job_id, w.session_id)
    assert ctx["transport"] == "ws"
    assert ctx["env_vars"] == {"API_KEY": SECRET} and ctx["agent"]["id"] == w.agent_id
    assert ctx["chat_history"][-1]["content"] == "what is in my box?"
    names = [f["name"] for f in box.files]
    assert names[:2] == ["_hub_launcher.py", "hub.py"] and names[-1] == "_hub_context.json"
    assert all(SECRET not in f["content"] for f in box.files if f["name"] != "_hub_context.json")


def test_progress_sets_the_jobs_progress_and_status_message_with_secrets_masked(harness: Callable[..., Harness]) -> None:
    seen: list[dict[str, Any]] = []

    def script(box: Box) -> Generator[Step, Reply, None]:
        yield Hub({"type": "progress", "percent": 40, "message": f"using {SECRET}"})
        yield message("checkpoint")  # written after the progress: the progress is in the database now
        seen.append(h.job(box.context["job_id"]))

    h = harness(script)
    w = h.world(env={"API_KEY": SECRET})
    ran = h.run(w)
    assert (seen[0]["progress"], seen[0]["statusMessage"]) == (40.0, "using [redacted]")
    assert ran.job["status"] == "SUCCEEDED"


def test_set_user_var_upserts_the_sessions_user_variable(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [Hub({"type": "user_var", "key": "lang", "value": "fr"}),
                             Hub({"type": "user_var", "key": "lang", "value": "de"}),
                             Hub({"type": "user_var", "key": "visits", "value": "3"})])
    w = h.world()
    factories.user_var(h.conn, w.session_id, "visits", "2")
    ran = h.run(w)
    assert ran.user_vars == {"lang": "de", "visits": "3"}


def test_hub_log_becomes_a_joblog_line_with_secrets_masked(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [Hub({"type": "log", "level": "warning", "message": f"key is {SECRET}"})])
    w = h.world(env={"API_KEY": SECRET})
    ran = h.run(w)
    assert "agent: key is [redacted]" in ran.logs
    assert all(SECRET not in line for line in ran.logs)


def test_a_malformed_line_is_logged_and_a_malformed_call_still_gets_an_error_reply(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [Hub({"type": "teleport"}), Call("call_llm", {"prompt": 5, "history": "no"}),
                             Hub({"type": "call", "id": 7, "method": "call_nothing", "params": {}}), message("after")])
    w = h.world()
    ran = h.run(w)
    assert ran.job["status"] == "SUCCEEDED" and ran.messages == ["after"]
    assert ran.outbox["result"]["protocol_errors"] == 2
    assert sum(line.startswith("ignored a malformed hub line") for line in ran.logs) == 2
    [box] = h.sandbox.runs
    # The call with bad params is a call (its handler refuses it); the unknown method's line is answered too.
    replies = [(r["id"], r["ok"], r["error"]["kind"]) for r in box.replies]
    assert replies == [(1, False, "bad_request"), (7, False, "invalid_request")]


def test_call_llm_is_answered_by_the_model_on_stdin_and_counted_in_the_result(
    harness: Callable[..., Harness], gemini: FakeGemini
) -> None:
    answers: list[Reply] = []

    def script(box: Box) -> Generator[Step, Reply, None]:
        reply = yield Call("call_llm", {"prompt": "say hi " + box.context["job_id"]})
        answers.append(reply)
        yield message(reply["result"]["text"] if reply else "no reply")
        refused = yield Call("call_llm", {"prompt": "one too many"})
        answers.append(refused)

    h = harness(script, GEMINI_API_KEY=KEY, GEMINI_BASE_URL=gemini.url, HUB_MAX_LLM_CALLS="1")
    w = h.world()
    ran = h.run(w)
    first, second = answers
    assert first is not None and first["ok"] and first["result"]["text"].startswith("[canned]")
    assert ran.messages == [first["result"]["text"]]
    assert second is not None and (second["ok"], second["error"]["kind"]) == (False, "limit")
    assert ran.outbox["result"]["llm"]["calls"] == 1 and ran.outbox["result"]["llm"]["total_tokens"] > 0
    assert any(line.startswith("llm call 1: gemini-2.5-flash ok") for line in ran.logs)
    assert "llm call refused: over HUB_MAX_LLM_CALLS (1) for this run" in ran.logs
    assert len(gemini.requests(containing=w.job_id)) == 1


def test_call_agent_runs_the_child_through_the_same_runner_with_its_own_job_and_returns_its_messages(
    harness: Callable[..., Harness],
) -> None:
    replies: list[Reply] = []

    def script(box: Box) -> Generator[Step, Reply, None]:
        if box.agent_id == child_id:
            yield message(f"child got {box.context['prompt']}")
            yield message("child done")
            return
        reply = yield Call("call_agent", {"agent_id": child_id, "input": {"q": 42}})
        replies.append(reply)
        yield message("caller done")

    h = harness(script)
    w = h.world()
    child_id = h.agent(w.user_id, "helper")
    ran = h.run(w)
    [reply] = replies
    assert reply is not None and reply["ok"]
    result = reply["result"]
    assert (result["status"], result["messages"], result["output"]) == (
        "succeeded", ['child got {"q": 42}', "child done"], "child done")
    child_job = h.job(result["job_id"])
    assert (child_job["status"], child_job["agentId"], child_job["sessionId"]) == ("SUCCEEDED", child_id, None)
    child_row = h.outbox(result["job_id"])
    assert (child_row["parent_id"], child_row["depth"], child_row["status"]) == (ran.outbox["id"], 1, "succeeded")
    assert ran.messages == ["caller done"]  # the child's messages went to the caller, not to the session
    assert ran.outbox["result"]["agent_calls"] == 1 and ran.job["status"] == "SUCCEEDED"
    # One runner, one sandbox: the child ran with the time its caller had left, not a config of its own.
    caller_box, child_box = h.sandbox.runs
    assert child_box.limits.run_timeout_ms < caller_box.limits.run_timeout_ms - h.cfg.child_time_margin_ms
    assert h.cfg.run_timeout_ms == 10_000


def test_call_agent_to_an_agent_already_in_the_chain_is_refused_without_a_child(harness: Callable[..., Harness]) -> None:
    replies: list[Reply] = []

    def script(box: Box) -> Generator[Step, Reply, None]:
        replies.append((yield Call("call_agent", {"agent_id": box.agent_id, "input": "me again"})))

    h = harness(script)
    ran = h.run(h.world())
    [reply] = replies
    assert reply is not None and reply["result"]["status"] == "failed"
    assert "already in the call chain" in reply["result"]["error"] and "job_id" not in reply["result"]
    assert len(h.sandbox.runs) == 1 and ran.job["status"] == "SUCCEEDED"


# ---- each outcome ------------------------------------------------------------------------------------


def test_an_agent_that_exits_non_zero_fails_the_job_with_its_last_stderr_line(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [message("partial"), Err("Traceback (most recent call last):\nValueError: boom\n"), Exit(1)])
    w = h.world()
    ran = h.run(w)
    assert (ran.label, ran.job["status"]) == ("failed", "FAILED")
    assert ran.job["errorMessage"] == "agent exited with status 1: ValueError: boom"
    assert ran.outbox["last_error"] == ran.job["errorMessage"] and ran.outbox["attempts"] == 1
    assert ran.messages == ["partial"]


@pytest.mark.parametrize(
    ("end", "error"),
    [
        (Exit(None, "SIGKILL", RunStatus.SG), "agent killed by signal SIGKILL (killed by the sandbox: over its CPU-time"),
        (Exit(None, "SIGKILL", RunStatus.OL), "stdout went over Piston's output limit"),
        (Exit(None, None, RunStatus.CAPPED), "agent output went over the dispatcher's limit of 2000000 characters"),
        (Exit(None, None, RunStatus.XX, "isolate broke"), "sandbox error: isolate broke"),
    ],
    ids=["signal", "piston-output-limit", "our-output-cap", "sandbox-error"],
)
def test_each_sandbox_status_fails_the_job_saying_why(harness: Callable[..., Harness], end: Exit, error: str) -> None:
    h = harness(lambda box: [end])
    ran = h.run(h.world())
    assert (ran.label, ran.job["status"]) == ("failed", "FAILED")
    assert ran.job["errorMessage"].startswith(error)


def test_an_agent_past_its_time_limit_fails_as_timed_out(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [message("started"), Hang()], AGENT_RUN_TIMEOUT_MS="300")
    ran = h.run(h.world())
    assert ran.job["errorMessage"] == "timed out after 0.3 s" and ran.messages == ["started"]
    assert ran.outbox["result"]["status"] == "TO"


def test_more_messages_than_allowed_stop_the_run_and_fail_it(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [message(str(i)) for i in range(10)], MAX_MESSAGES_PER_RUN="3")
    ran = h.run(h.world())
    assert ran.job["errorMessage"] == "agent sent more than 3 messages (MAX_MESSAGES_PER_RUN)"
    assert ran.messages == ["0", "1", "2"] and ran.outbox["result"]["messages"] == 3
    assert ran.outbox["result"]["status"] == "STOPPED"


def test_a_refused_run_fails_at_once_without_retrying(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [Fail(SandboxRefused("run_timeout cannot exceed the configured limit of 3000"))])
    ran = h.run(h.world())
    assert ran.job["errorMessage"] == "Piston refused the run: run_timeout cannot exceed the configured limit of 3000"
    assert len(h.sandbox.runs) == 1


def test_a_transient_fault_is_retried_in_process_without_duplicating_what_the_failed_try_wrote(
    harness: Callable[..., Harness],
) -> None:
    def script(box: Box) -> list[Step]:
        if box.number == 1:  # the first try wrote a message, then the connection dropped mid-run
            return [message("one"), Fail(SandboxTransient("WebSocket closed mid-run (1006)", started=True))]
        return [message("one"), message("two")]

    h = harness(script)
    ran = h.run(h.world())
    assert (ran.label, ran.messages) == ("succeeded", ["one", "two"])
    assert "Piston unavailable, retrying (try 2 of 2)" in ran.logs


def test_a_lasting_transient_fault_puts_the_row_back_to_wait_for_a_later_attempt(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [Fail(SandboxTransient("cannot connect to ws://127.0.0.1:9/api/v2/connect"))])
    w = h.world()
    ran = h.run(w)
    assert ran.label == "retry_later" and len(h.sandbox.runs) == 2  # PISTON_RETRY_ATTEMPTS tries first
    assert (ran.outbox["status"], ran.outbox["attempts"], ran.outbox["lease_owner"]) == ("pending", 1, None)
    assert ran.outbox["next_attempt_at"] > ran.outbox["created_at"]
    assert ran.job["status"] == "QUEUED" and ran.job["statusMessage"].startswith("waiting to retry: Piston unavailable")
    assert any(line.startswith("Piston unavailable: cannot connect") and "will retry in" in line
               and line.endswith("(attempt 1 of 5)") for line in ran.logs)


def test_a_transient_fault_on_the_last_attempt_fails_the_job(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [Fail(SandboxTransient("Piston answered HTTP 503"))])
    w = h.world()
    h.enqueue(w)
    h.conn.execute("UPDATE agent_hub.invocation_outbox SET max_attempts = 1 WHERE job_id = %s", (w.job_id,))
    ran = h.run(w)
    assert (ran.label, ran.outbox["status"]) == ("failed", "failed")
    assert ran.job["errorMessage"] == "Piston unavailable: Piston answered HTTP 503 (gave up after 1 attempts)"


def test_a_job_cancelled_while_it_runs_stops_the_run_at_the_next_beat_and_ends_cancelled(
    harness: Callable[..., Harness],
) -> None:
    def script(box: Box) -> Generator[Step, Reply, None]:
        yield message("working")
        h.cancel_job(box.context["job_id"])  # the user cancels on the hub
        h.beat()  # the dispatcher's heartbeat notices
        yield Hang()
        yield message("never written")

    h = harness(script)
    ran = h.run(h.world())
    assert (ran.label, ran.outbox["status"], ran.job["status"]) == ("cancelled", "cancelled", "CANCELLED")
    assert ran.messages == ["working"]


def test_a_job_cancelled_before_its_run_starts_is_closed_without_running(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [message("never")])
    w = h.world()
    h.enqueue(w)
    h.cancel_job(w.job_id)
    ran = h.run(w)
    assert (ran.label, ran.outbox["result"]) == ("cancelled", {"skipped": True, "attempts": 1})
    assert h.sandbox.runs == []


def test_a_run_that_lost_its_lease_writes_nothing_more(harness: Callable[..., Harness]) -> None:
    def script(box: Box) -> Generator[Step, Reply, None]:
        yield message("before")
        h.conn.execute("UPDATE agent_hub.invocation_outbox SET lease_owner = 'another-dispatcher' WHERE job_id = %s",
                       (box.context["job_id"],))
        h.beat()
        yield Hang()

    h = harness(script)
    ran = h.run(h.world())
    assert ran.label == "lease_lost"
    assert (ran.outbox["status"], ran.outbox["lease_owner"], ran.job["status"]) == ("running", "another-dispatcher", "PROCESSING")
    assert ran.messages == ["before"]


def test_a_run_stopped_by_shutdown_is_released_for_another_dispatcher_without_using_an_attempt(
    harness: Callable[..., Harness],
) -> None:
    control = RunControl()

    def script(box: Box) -> Generator[Step, Reply, None]:
        yield message("before")
        control.stop(StopReason.SHUTDOWN)  # the worker's drain, past its grace
        yield Hang()

    h = harness(script)
    ran = h.run(h.world(), control)
    assert ran.label == "released"
    assert (ran.outbox["status"], ran.outbox["attempts"], ran.job["status"]) == ("pending", 0, "QUEUED")
    assert "run interrupted by dispatcher shutdown; released for another dispatcher" in ran.logs


@pytest.mark.parametrize(("reason", "label", "outbox_status"), [
    (StopReason.LEASE_EXPIRING, "released", "pending"),
    (StopReason.LEASE_LOST, "lease_lost", "running"),
    (StopReason.CANCELLED, "cancelled", "cancelled"),
])
def test_a_run_stopped_before_its_sandbox_starts_never_starts_it(
    harness: Callable[..., Harness], reason: StopReason, label: str, outbox_status: str,
) -> None:
    # E.g. self-fenced while the context read waited out a Postgres outage: another dispatcher may hold
    # the row by the time the read returns, so the agent must not start here (test_fencing_outage_e2e).
    control = RunControl()
    h = harness(lambda box: [message("must not run")])
    load = h.runner.load_context

    def load_then_stopped(*args: Any, **kwargs: Any) -> Any:
        ctx = load(*args, **kwargs)
        control.stop(reason)
        return ctx

    h.runner.load_context = load_then_stopped
    ran = h.run(h.world(), control)
    assert h.sandbox.runs == []
    assert (ran.label, ran.outbox["status"], ran.messages) == (label, outbox_status, [])


def test_a_run_stopped_during_a_retrys_back_off_does_not_start_its_agent_again(
    harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first try dropped mid-run, and the lease watch stopped the run during the back-off before the retry:
    # a second start could overlap the next owner's attempt (test_fencing_outage_e2e).
    control = RunControl()
    real = runner_module.retrying

    def stopped_in_back_off(attempts: int, base_s: float, max_s: float) -> Any:
        return real(attempts, base_s, max_s).copy(before_sleep=lambda state: control.stop(StopReason.LEASE_EXPIRING))

    monkeypatch.setattr(runner_module, "retrying", stopped_in_back_off)
    h = harness(lambda box: [message("one"), Fail(SandboxTransient("WebSocket closed mid-run (1006)", started=True))])
    ran = h.run(h.world(), control)
    assert len(h.sandbox.runs) == 1
    assert (ran.label, ran.outbox["status"], ran.messages) == ("released", "pending", ["one"])


# ---- transports ---------------------------------------------------------------------------------------


def test_auto_without_a_websocket_falls_back_to_execute_rebuilding_the_box_and_remembers_it(
    harness: Callable[..., Harness],
) -> None:
    def script(box: Box) -> list[Step]:
        # What the hub does: on the batch transport call_llm fails inside the agent, without a call line.
        said = "llm over the relay" if box.context["transport"] == "ws" else "hub-error: call_llm requires the WebSocket"
        return [message("before"), message(said), message("after")]

    h = harness(script, websocket=False, PISTON_TRANSPORT="auto")
    first, second = h.world(), h.world()
    ran = h.run(first)
    assert ran.label == "succeeded" and ran.outbox["result"]["transport"] == "execute"
    assert ran.messages == ["before", "hub-error: call_llm requires the WebSocket", "after"]
    started = next(line for line in ran.logs if line.startswith("run started:"))
    assert started.endswith("transport ws")  # tried first, refused at the handshake
    assert FALLBACK_LOG in ran.logs[ran.logs.index(started):]
    [box] = h.sandbox.runs  # the refused WebSocket run played nothing
    assert (box.transport, box.context["transport"]) == (Transport.EXECUTE, "execute")

    again = h.run(second)
    assert again.label == "succeeded" and FALLBACK_LOG not in again.logs
    assert any(line.startswith("run started:") and line.endswith("transport execute") for line in again.logs)
    assert [b.transport for b in h.sandbox.runs] == [Transport.EXECUTE, Transport.EXECUTE]


def test_ws_without_a_websocket_fails_instead_of_falling_back(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [message("never")], websocket=False, PISTON_TRANSPORT="ws")
    ran = h.run(h.world())
    assert ran.job["errorMessage"].startswith("Piston error: WebSocket handshake answered HTTP 404")
    assert h.sandbox.runs == []


def test_a_call_line_on_the_batch_transport_fails_the_run_as_piston_does(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [Call("call_llm", {"prompt": "hi"})], PISTON_TRANSPORT="execute")
    ran = h.run(h.world())
    assert ran.job["errorMessage"] == "Piston error: stdin is only available on the WebSocket transport"


# ---- call_agent children and the heartbeat --------------------------------------------------------------


def test_a_call_agent_child_is_held_and_renewed_by_the_heartbeat_and_stops_when_its_own_job_is_cancelled(
    harness: Callable[..., Harness],
) -> None:
    leases_seen: list[tuple[bool, bool]] = []
    replies: list[Reply] = []

    def script(box: Box) -> Generator[Step, Reply, None]:
        if box.agent_id == child_id:
            job_id = box.context["job_id"]
            before = h.outbox(job_id)["lease_expires_at"]
            h.beat()
            renewed = h.outbox(job_id)["lease_expires_at"] > before
            held = any(h.outbox(job_id)["id"] == row_id for row_id in h.held.snapshot())
            leases_seen.append((held, renewed))
            yield message("child working")
            h.cancel_job(job_id)  # the child's own Job, cancelled on the hub
            h.beat()
            yield Hang()
            return
        replies.append((yield Call("call_agent", {"agent_id": child_id, "input": "go"})))
        yield message("caller goes on")

    h = harness(script)
    w = h.world()
    child_id = h.agent(w.user_id, "slow-helper")
    ran = h.run(w)
    assert leases_seen == [(True, True)]
    [reply] = replies
    assert reply is not None and reply["result"]["status"] == "cancelled"
    assert reply["result"]["messages"] == ["child working"]
    assert h.outbox(reply["result"]["job_id"])["status"] == "cancelled"
    assert (ran.label, ran.messages) == ("succeeded", ["caller goes on"])
    assert h.held.snapshot() == {}  # nothing left held once the runs are over
    assert not [t for t in threading.enumerate() if t.name.startswith("child-")]  # no watcher thread per child


def test_a_child_stops_with_its_caller_for_the_same_reason(harness: Callable[..., Harness]) -> None:
    def script(box: Box) -> Generator[Step, Reply, None]:
        if box.agent_id == child_id:
            yield message("child working")
            h.cancel_job(w.job_id)  # the CALLER's Job is cancelled
            h.beat()
            yield Hang()
            return
        yield Call("call_agent", {"agent_id": child_id, "input": "go"})
        yield Hang()

    h = harness(script)
    w = h.world()
    child_id = h.agent(w.user_id, "helper")
    ran = h.run(w)
    assert (ran.label, ran.job["status"]) == ("cancelled", "CANCELLED")
    [child] = h.conn.execute("SELECT status::text AS status FROM agent_hub.invocation_outbox WHERE parent_id = %s",
                             (ran.outbox["id"],)).fetchall()
    assert child["status"] == "cancelled"


def test_result_json_of_a_run_is_what_the_summary_says(harness: Callable[..., Harness]) -> None:
    h = harness(lambda box: [message("a"), Err("warn\n")])
    ran = h.run(h.world())
    result = ran.outbox["result"]
    assert {k: result[k] for k in ("messages", "status", "exit_code", "signal", "transport", "protocol_errors",
                                    "output_truncated", "attempts")} == {
        "messages": 1, "status": "OK", "exit_code": 0, "signal": None, "transport": "ws", "protocol_errors": 0,
        "output_truncated": False, "attempts": 1}
    assert "stderr (last 2000 characters):\nwarn\n" in ran.logs
    assert json.dumps(result)  # stored as JSON


# ---- hub.http and SECRET_* env vars (issue 15) ----------------------------------------------------------

TOKEN = "tok/runner+0123456789"  # percent-encoding changes it: the echoed forms must be masked too


@pytest.fixture
def echo() -> Iterator[LocalServer]:
    yield from serve("127.0.0.1")


def test_secret_env_vars_are_withheld_from_the_box_and_masked_in_every_record(harness: Callable[..., Harness]) -> None:
    # The script stands for anything that could carry the value back: an echoing server, an error text.
    h = harness(lambda box: [Hub({"type": "log", "level": "info", "message": f"echoed {TOKEN} {quote(TOKEN, safe='')}"}),
                             Err(f"boom {TOKEN}\n"), Exit(1)])
    w = h.world(env={"API_KEY": SECRET, "SECRET_API_TOKEN": TOKEN})
    ran = h.run(w)
    [box] = h.sandbox.runs
    assert box.context["env_vars"] == {"API_KEY": SECRET}
    assert all(TOKEN not in f["content"] for f in box.files)
    assert "SECRET_API_TOKEN" not in next(f["content"] for f in box.files if f["name"] == "_hub_context.json")
    assert "agent: echoed [redacted] [redacted]" in ran.logs
    assert ran.job["status"] == "FAILED" and ran.job["errorMessage"].endswith("boom [redacted]")
    stored = json.dumps([ran.logs, ran.job, ran.outbox], default=str)
    assert TOKEN not in stored and quote(TOKEN, safe="") not in stored


def test_hub_http_goes_through_the_broker_with_the_secret_put_in_and_masked_out(
    harness: Callable[..., Harness], echo: LocalServer
) -> None:
    replies: list[Reply] = []

    def script(box: Box) -> Generator[Step, Reply, None]:
        replies.append((yield Call("http", {"method": "GET", "url": echo.url("/echo?q=1"),
                                            "headers": {"Authorization": "Bearer {{SECRET_API_TOKEN}}"}})))
        replies.append((yield Call("http", {"method": "GET", "url": "http://169.254.169.254/latest/meta-data/"})))
        replies.append((yield Call("http", {"method": "GET", "url": echo.url("/"),
                                            "headers": {"X-Key": "{{SECRET_UNKNOWN}}"}})))

    h = harness(script, HUB_HTTP_ALLOW_HOSTS="127.0.0.1,169.254.169.254", HUB_HTTP_ALLOW_PRIVATE="1")
    w = h.world(env={"SECRET_API_TOKEN": TOKEN, "HUB_HTTP_ALLOW": "127.0.0.1,169.254.169.254"})
    ran = h.run(w)
    echoed, metadata, unknown = replies
    assert echoed is not None and echoed["ok"] and echoed["result"]["status"] == 200
    assert json.loads(echoed["result"]["text"])["headers"]["Authorization"] == "Bearer [redacted]"
    assert echoed["result"]["headers"]["X-Echo-Authorization"] == "Bearer [redacted]"
    assert [r.headers["Authorization"] for r in echo.requests] == [f"Bearer {TOKEN}"]  # one request, the real value
    assert metadata is not None and metadata["error"]["kind"] == "forbidden" and "never allowed" in metadata["error"]["message"]
    assert unknown is not None and unknown["error"]["kind"] == "bad_request" and "SECRET_UNKNOWN" in unknown["error"]["message"]
    http = ran.outbox["result"]["http"]
    assert (http["calls"], http["failed"], http["kinds"]) == (3, 2, {"forbidden": 1, "bad_request": 1})
    # The bytes received: the body held the token once, where the agent got [redacted].
    assert http["bytes"] == echoed["result"]["size"] == len(echoed["result"]["text"].encode()) + len(TOKEN) - len("[redacted]")
    lines = [line for line in ran.logs if line.startswith("http call")]
    assert len(lines) == 3 and lines[0].startswith("http call 1: GET 127.0.0.1/echo -> 200, ")
    assert lines[1].startswith("http call 2: GET 169.254.169.254/latest/meta-data/ failed (forbidden: ")
    assert TOKEN not in json.dumps([ran.logs, ran.outbox], default=str)


def test_hub_http_is_off_without_the_operators_allow_list(harness: Callable[..., Harness], echo: LocalServer) -> None:
    replies: list[Reply] = []

    def script(box: Box) -> Generator[Step, Reply, None]:
        replies.append((yield Call("http", {"method": "GET", "url": echo.url("/")})))

    h = harness(script, HUB_HTTP_ALLOW_PRIVATE="1")
    ran = h.run(h.world(env={"HUB_HTTP_ALLOW": "*"}))
    [reply] = replies
    assert reply is not None and reply["error"]["kind"] == "forbidden" and "HUB_HTTP_ALLOW_HOSTS" in reply["error"]["message"]
    assert echo.requests == [] and ran.job["status"] == "SUCCEEDED"
