"""The hub's cancel line: on the WebSocket transport the injected hub module reads stdin in the background and
ends the agent's process at once on a ``cancel`` control line marked with the run's nonce.

The box is laid out as Piston lays it out (build_files) and run in a real python3 process; lines are written
to its stdin as the dispatcher writes them (dispatcher/protocol.py, encode_control / encode_reply).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dispatcher.bundle import LAUNCHER_NAME, AgentSource, build_files
from dispatcher.protocol import CANCEL_EXIT_STATUS, encode_control, protocol_prefix
from tests.unit.test_hub_sdk import NONCE, context

# Longer than any deadline below: an agent still sleeping when its test gives up shows the cancel did nothing.
SLEEP_S = 120


class Agent:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.buffer = b""
        assert proc.stdout is not None
        self.selector = selectors.DefaultSelector()
        self.selector.register(proc.stdout, selectors.EVENT_READ)

    def line(self, timeout: float = 20.0) -> str:
        """The next protocol line's JSON (plain output skipped); fails after ``timeout`` s without one."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                text = raw.decode()
                if text.startswith(protocol_prefix(NONCE)):
                    return text[len(protocol_prefix(NONCE)):]
            if not self.selector.select(timeout=max(0.0, deadline - time.monotonic())):
                pytest.fail("no line from the agent in time")
            data = os.read(self.proc.stdout.fileno(), 65536)
            if not data:
                pytest.fail("the agent ended before its line")
            self.buffer += data

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout=timeout)


@contextmanager
def agent(tmp_path: Path, code: str, *, transport: str = "ws") -> Iterator[Agent]:
    built = build_files(context(transport), [AgentSource("main.py", textwrap.dedent(code))])
    for f in built.files:
        (tmp_path / f["name"]).write_text(f["content"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}  # block-buffered stdout, as in Piston
    proc = subprocess.Popen([sys.executable, LAUNCHER_NAME], cwd=tmp_path, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        yield Agent(proc)
    finally:
        proc.kill()
        proc.wait()


def test_a_cancel_line_ends_a_sleeping_agent_at_once(tmp_path: Path) -> None:
    with agent(tmp_path, f"""\
        import time, hub
        hub.send_message("started")
        time.sleep({SLEEP_S})
        hub.send_message("never")
    """) as a:
        assert '"started"' in a.line()
        a.write(encode_control(NONCE))
        assert a.wait() == CANCEL_EXIT_STATUS  # within the wait's 20 s, not the agent's 120


def test_a_cancel_line_ends_an_agent_blocked_in_a_call(tmp_path: Path) -> None:
    with agent(tmp_path, """\
        import hub
        hub.send_message(hub.call_llm("a question nobody answers"))
    """) as a:
        assert '"call_llm"' in a.line()
        a.write(encode_control(NONCE))
        assert a.wait() == CANCEL_EXIT_STATUS


def test_a_cancel_line_ends_an_agent_busy_in_a_loop(tmp_path: Path) -> None:
    with agent(tmp_path, """\
        import hub
        hub.send_message("started")
        while True:
            pass
    """) as a:
        assert '"started"' in a.line()
        a.write(encode_control(NONCE))
        assert a.wait() == CANCEL_EXIT_STATUS


def test_a_control_line_of_another_run_or_another_kind_is_ignored(tmp_path: Path) -> None:
    with agent(tmp_path, """\
        import sys, hub
        hub.send_message("started")
        hub.send_message(hub.call_llm("go on?"))
    """) as a:
        assert '"started"' in a.line()
        call = a.line()
        a.write(encode_control("another-runs-nonce"))
        a.write(protocol_prefix(NONCE) + '{"type":"pause"}\n')
        a.write(protocol_prefix(NONCE) + "not json\n")
        call_id = int(call.split('"id":')[1].split(",")[0])
        a.write(f'{{"id":{call_id},"ok":true,"result":{{"text":"still here"}}}}\n')
        assert '"still here"' in a.line()
        assert a.wait() == 0


def test_the_agents_own_stdin_is_empty_on_the_websocket_transport(tmp_path: Path) -> None:
    # stdin belongs to the hub there: an agent reading it must not take (and so lose) the hub's lines.
    with agent(tmp_path, """\
        import sys, hub
        hub.send_message(repr(sys.stdin.read()))
    """) as a:
        a.write("a line for nobody\n")
        assert a.line() == '{"type":"message","content":"\'\'"}'
        assert a.wait() == 0
