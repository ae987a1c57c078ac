"""A stop that stops (issue 16, item 4): on the WebSocket transport a stopped run's agent process ends at once
(the hub's cancel line on its stdin), so its Piston slot goes to the next run.

Against a real localpiston with ONE slot: a second run queued behind a stopped one finishes long before the
stopped one's own time would have run out. How soon is measured in bench/ (``python -m bench.stop_latency``);
here the deadline only separates "the slot was freed" from "the slot was held until the run's limit".
"""

from __future__ import annotations

import contextlib
import json
import secrets
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from dispatcher.bundle import AgentSource, build_files
from dispatcher.control import RunControl, StopReason
from dispatcher.protocol import encode_control, protocol_prefix
from dispatcher.sandbox.piston.client import PistonClient
from dispatcher.sandbox.port import RunLimits, RunResult, RunStatus, SandboxRequest, StdinWriter, Transport
from tests.integration.localpiston_proc import LocalPiston, start_localpiston
from tests.waiting import wait_until

HOLD_S = 120  # how long a run that is not really stopped holds the only slot
LIMITS = RunLimits(run_timeout_ms=(HOLD_S + 30) * 1000)
FREED_WITHIN_S = 60  # generous, and still half of HOLD_S


@pytest.fixture(scope="module")
def piston() -> Iterator[LocalPiston]:
    with start_localpiston({"PISTON_MAX_CONCURRENT_JOBS": "1", "PISTON_RUN_TIMEOUT": str(LIMITS.run_timeout_ms),
                            "PISTON_RUN_CPU_TIME": str(LIMITS.run_timeout_ms)}) as server:
        yield server
        server.kill()  # with any sandbox a failed test left running


class Run:
    """One hub box run in a thread: its stdout collected, its result kept."""

    def __init__(self, client: PistonClient, code: str, *, control: RunControl | None = None,
                 on_chunk: Any = None, nonce: str | None = None) -> None:
        self.nonce = secrets.token_hex(8)
        ctx = {"version": 1, "nonce": self.nonce, "transport": "ws", "agent": {"id": "a", "name": "a", "version": "1"},
               "job_id": "j", "session_id": None, "user_id": "u", "prompt": "p", "env_vars": {}, "user_vars": {},
               "chat_history": [], "history_cut": 0}
        files = build_files(ctx, [AgentSource("main.py", textwrap.dedent(code))]).files
        self.stdout: list[str] = []
        self.result: RunResult | None = None
        self.on_chunk = on_chunk
        control = control or RunControl()
        self.request = SandboxRequest(files, LIMITS, transport=Transport.WS, on_stdout=self._chunk,
                                      should_stop=control.should_stop, on_stop=control.on_stop,
                                      stop_stdin=encode_control(nonce or self.nonce))
        self.thread = threading.Thread(target=self._run, args=(client,), daemon=True)
        self.thread.start()

    def _chunk(self, chunk: str, stdin: StdinWriter) -> None:
        self.stdout.append(chunk)
        if self.on_chunk is not None:
            self.on_chunk(chunk)

    def _run(self, client: PistonClient) -> None:
        self.result = client.run(self.request)

    def said(self, text: str) -> bool:
        return protocol_prefix(self.nonce) + json.dumps({"type": "message", "content": text},
                                                      separators=(",", ":")) in "".join(self.stdout)

    def done(self) -> RunResult | None:
        return self.result


SLEEPER = f"""\
    import time, hub
    hub.send_message("started")
    time.sleep({HOLD_S})
"""
NEXT = """\
    import hub
    hub.send_message("next ran")
"""


def test_a_stopped_run_frees_its_only_slot_for_the_run_queued_behind_it(piston: LocalPiston) -> None:
    client = PistonClient(piston.url)
    control = RunControl()
    first = Run(client, SLEEPER, control=control)
    wait_until(lambda: first.said("started"), what="the first run to start")
    second = Run(client, NEXT)  # queued by Piston behind the first: one slot
    control.stop(StopReason.CANCELLED)
    result = wait_until(second.done, timeout=FREED_WITHIN_S, what="the queued run to get the slot and finish",
                        details=piston.output)
    assert result.status is RunStatus.OK and second.said("next ran")
    stopped = wait_until(first.done, what="the stopped run to return")
    assert stopped.status is RunStatus.STOPPED
    assert stopped.message == "Stopped by the caller; the program ended on the hub's cancel line"


def test_a_run_stopped_while_its_thread_is_busy_in_a_hook_is_ended_from_the_stopping_thread(
    piston: LocalPiston
) -> None:
    # The run's own thread is stuck in on_stdout (as while it answers a long call); the stop comes from the
    # heartbeat's thread, which writes the cancel line itself.
    client = PistonClient(piston.url)
    control = RunControl()
    release = threading.Event()
    first = Run(client, SLEEPER, control=control, on_chunk=lambda chunk: release.wait(FREED_WITHIN_S + 30))
    wait_until(lambda: first.stdout, what="the first run's first output")
    second = Run(client, NEXT)
    control.stop(StopReason.LEASE_LOST)
    try:
        result = wait_until(second.done, timeout=FREED_WITHIN_S, what="the queued run to finish", details=piston.output)
    finally:
        release.set()
    assert result.status is RunStatus.OK
    assert wait_until(first.done).status is RunStatus.STOPPED


def test_a_call_agent_childs_run_is_ended_when_its_caller_is_stopped(piston: LocalPiston) -> None:
    client = PistonClient(piston.url)
    caller = RunControl()
    child = Run(client, SLEEPER, control=caller.child())
    wait_until(lambda: child.said("started"), what="the child's run to start")
    second = Run(client, NEXT)
    caller.stop(StopReason.SHUTDOWN)
    assert wait_until(second.done, timeout=FREED_WITHIN_S, what="the queued run to finish").status is RunStatus.OK
    assert wait_until(child.done).status is RunStatus.STOPPED


def test_a_cancel_line_with_another_runs_nonce_does_not_end_the_run(piston: LocalPiston) -> None:
    client = PistonClient(piston.url)
    control = RunControl()
    # Exits by itself soon after: the slot is then free again for the other tests.
    run = Run(client, "import time, hub\nhub.send_message('started')\ntime.sleep(3)\nhub.send_message('lived')\n",
              control=control, nonce="not-this-runs-nonce")
    wait_until(lambda: run.said("started"), what="the run to start")
    control.stop(StopReason.CANCELLED)
    result = wait_until(run.done, what="the run to return")
    assert result.status is RunStatus.STOPPED
    assert "goes on server-side" in (result.message or "")  # the process was not ended by that line
    wait_until(lambda: not piston.busy(), what="the run to end on its own", details=piston.output)


# ---- the run's own deadline, on a server that does not end it ------------------------------------------


def test_a_run_past_its_own_deadline_gets_the_cancel_line_and_ends_as_a_time_out() -> None:
    got: list[str] = []

    def lax_piston(ws: ServerConnection) -> None:
        ws.recv()  # the init
        ws.send(json.dumps({"type": "runtime", "language": "python", "version": "3.12.0"}))
        ws.send(json.dumps({"type": "stage", "stage": "run"}))
        with contextlib.suppress(ConnectionClosed):
            while True:  # never ends the run itself; ends it when told on stdin
                frame = json.loads(ws.recv())
                if frame.get("type") == "data":
                    got.append(frame["data"])
                    ws.send(json.dumps({"type": "exit", "stage": "run", "code": 143, "signal": None}))
                    ws.close(4999, "Job Completed")
                    return

    with serve(lax_piston, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        client = PistonClient(f"http://127.0.0.1:{port}", execute_margin_s=30)
        stop_line = encode_control("n0nce")
        t0 = time.monotonic()
        result = client.run(SandboxRequest([{"name": "main.py", "content": ""}], RunLimits(run_timeout_ms=300),
                                           transport=Transport.WS, stop_stdin=stop_line))
        elapsed = time.monotonic() - t0
        server.shutdown()
    assert got == [stop_line]
    assert (result.status, result.message) == (RunStatus.TO, "Time limit exceeded")
    assert elapsed < 25  # ended by our line (after ~1.3 s), not by the 30 s margin's transient error
