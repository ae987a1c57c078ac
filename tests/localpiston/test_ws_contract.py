"""WebSocket /api/v2/connect: message order, close codes and the quirks clients must live with."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from tests.waiting import wait_until

from .conftest import Server

# A run that outlasts whatever a test sends after `stage` (the 3 s default run limit ends it), so the frame
# meets a running job however slow the machine is.
RUNS_A_WHILE = "import time; time.sleep(30)"
GO = {"type": "data", "stream": "stdin", "data": "go\n"}


def init_frame(code: str, **extra: Any) -> dict[str, Any]:
    return {"type": "init", "language": "python", "version": "*", "files": [{"content": code}], **extra}


def collect(
    ws: ClientConnection, after_stage: list[dict[str, Any]] | None = None, timeout: float = 15
) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """Send `after_stage` once the stage frame arrived; collect until the server closes."""
    messages: list[dict[str, Any]] = []
    try:
        while True:
            message = json.loads(ws.recv(timeout=timeout))
            messages.append(message)
            if message.get("type") == "stage":
                for frame in after_stage or []:
                    ws.send(json.dumps(frame))
    except ConnectionClosed as closed:
        rcvd = closed.rcvd
        return messages, rcvd.code if rcvd else None, rcvd.reason if rcvd else None


def session(
    server: Server, first: list[dict[str, Any]], after_stage: list[dict[str, Any]] | None = None, timeout: float = 15
) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """Send `first`, then `after_stage` once the stage frame arrived; collect until the server closes."""
    with connect(server.ws_url) as ws:
        for frame in first:
            ws.send(json.dumps(frame))
        return collect(ws, after_stage, timeout)


def until_stage(ws: ClientConnection) -> None:
    while json.loads(ws.recv(timeout=15))["type"] != "stage":
        pass


def stdout_of(messages: list[dict[str, Any]]) -> str:
    return "".join(m["data"] for m in messages if m["type"] == "data" and m["stream"] == "stdout")


def test_job_streams_runtime_stage_data_exit_then_4999(piston: Server) -> None:
    code = "import sys\nprint('hello', flush=True)\nsys.stderr.write('warn\\n')"
    messages, code_, reason = session(piston, [init_frame(code)])
    version = requests.get(piston.url + "/api/v2/runtimes", timeout=5).json()[0]["version"]
    assert messages[0] == {"type": "runtime", "language": "python", "version": version}
    assert messages[1] == {"type": "stage", "stage": "run"}
    assert messages[-1] == {"type": "exit", "stage": "run", "code": 0, "signal": None}
    assert stdout_of(messages) == "hello\n"
    assert "".join(m["data"] for m in messages if m.get("stream") == "stderr") == "warn\n"
    assert (code_, reason) == (4999, "Job Completed")


def test_output_is_streamed_as_it_arrives(piston: Server) -> None:
    # The program waits for an answer to its first line: it can only go on if that line reached us mid-run
    # (output held back until the end would leave it waiting until the run limit kills it).
    code = "import sys\nprint('first', flush=True)\nprint('second ' + sys.stdin.readline().strip(), flush=True)"
    data: list[str] = []
    with connect(piston.ws_url) as ws:
        ws.send(json.dumps(init_frame(code)))
        try:
            while True:
                message = json.loads(ws.recv(timeout=10))
                if message["type"] == "data":
                    data.append(message["data"])
                    if message["data"] == "first\n":
                        ws.send(json.dumps(GO))
        except ConnectionClosed:
            pass
    assert data == ["first\n", "second go\n"]


def test_stdin_frames_after_stage_are_written_raw(piston: Server) -> None:
    code = "import sys\nline = sys.stdin.readline()\nprint(repr(line), flush=True)\nprint(repr(sys.stdin.read(2)))"
    messages, code_, _ = session(
        piston,
        [init_frame(code)],
        [{"type": "data", "stream": "stdin", "data": "ab\n"}, {"type": "data", "stream": "stdin", "data": "cd"}],
    )
    assert stdout_of(messages) == "'ab\\n'\n'cd'\n"
    assert code_ == 4999


def test_stdin_is_never_closed_so_reading_to_eof_times_out(piston: Server) -> None:
    code = "import sys\ndata = sys.stdin.read()\nprint('eof reached')"
    messages, code_, _ = session(
        piston, [init_frame(code, run_timeout=500)], [{"type": "data", "stream": "stdin", "data": "x\n"}]
    )
    assert messages[-1] == {"type": "exit", "stage": "run", "code": None, "signal": "SIGKILL"}
    assert stdout_of(messages) == ""
    assert code_ == 4999


def test_stdin_sent_before_the_process_started_is_lost(piston1: Server) -> None:
    # One job slot: a blocker holds it until we write its stdin, so our job waits in the queue while its
    # stdin frame arrives.
    code = "import select, sys\nready, _, _ = select.select([sys.stdin], [], [], 0.5)\nprint('got' if ready else 'nothing')"
    with connect(piston1.ws_url) as blocker:
        blocker.send(json.dumps(init_frame("import sys; sys.stdin.readline()")))
        until_stage(blocker)
        with connect(piston1.ws_url) as ws:
            ws.send(json.dumps(init_frame(code)))
            ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "early\n"}))
            # The server answers a ping only after handling every frame sent before it: the stdin frame has
            # arrived, and our job is still queued behind the blocker.
            assert ws.ping().wait(15)
            blocker.send(json.dumps(GO))
            messages, code_, _ = collect(ws)
        blocker_messages, _, _ = collect(blocker)
    assert blocker_messages[-1] == {"type": "exit", "stage": "run", "code": 0, "signal": None}  # released by us
    assert stdout_of(messages) == "nothing\n"
    assert code_ == 4999


def test_signal_frames_are_accepted_but_never_delivered(piston: Server) -> None:
    # The program finishes only once its stdin arrives, which the server handles after the signal frame.
    code = "import sys\nsys.stdin.readline()\nprint('still alive')"
    messages, code_, _ = session(piston, [init_frame(code)], [{"type": "signal", "signal": "SIGKILL"}, GO])
    assert stdout_of(messages) == "still alive\n"
    assert messages[-1] == {"type": "exit", "stage": "run", "code": 0, "signal": None}
    assert code_ == 4999


def test_no_output_cap_on_the_websocket(piston: Server) -> None:
    messages, code_, _ = session(piston, [init_frame("print('z' * 50000)")])
    assert stdout_of(messages) == "z" * 50000 + "\n"
    assert messages[-1]["code"] == 0 and code_ == 4999


def test_timeout_reports_exit_with_sigkill_and_null_code(piston: Server) -> None:
    messages, _, _ = session(piston, [init_frame("import time; time.sleep(5)", run_timeout=300)])
    assert messages[-1] == {"type": "exit", "stage": "run", "code": None, "signal": "SIGKILL"}


def test_invalid_init_sends_error_then_closes_4002(piston: Server) -> None:
    messages, code_, reason = session(piston, [init_frame("print(1)", version="9")])
    assert messages == [{"type": "error", "message": "python-9 runtime is unknown"}]
    assert (code_, reason) == (4002, "Notified Error")


def test_escaping_file_name_in_init_is_an_error_frame_and_4002(piston: Server) -> None:
    frame = init_frame("print(1)")
    frame["files"].append({"name": "../evil", "content": "x"})
    messages, code_, _ = session(piston, [frame])
    assert [m["type"] for m in messages] == ["error"]
    assert "escape" in messages[0]["message"]
    assert code_ == 4002


def test_malformed_frame_is_an_error_and_4002(piston: Server) -> None:
    with connect(piston.ws_url) as ws:
        ws.send("{not json")
        message = json.loads(ws.recv(timeout=5))
        try:
            ws.recv(timeout=5)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4002
    assert message["type"] == "error" and "JSON" in message["message"]


def test_second_init_closes_4000_already_initialized(piston: Server) -> None:
    _, code_, reason = session(piston, [init_frame(RUNS_A_WHILE)], [init_frame("print(1)")])
    assert (code_, reason) == (4000, "Already Initialized")


def test_no_init_within_one_second_closes_4001(piston: Server) -> None:
    started = time.monotonic()
    messages, code_, reason = session(piston, [])
    elapsed = time.monotonic() - started
    assert messages == []
    assert (code_, reason) == (4001, "Initialization Timeout")
    # The 1 s timer fired: not before 1 s, and not never (generous upper bound for a loaded machine).
    assert 0.9 <= elapsed < 10


def test_data_before_init_closes_4003_not_yet_initialized(piston: Server) -> None:
    _, code_, reason = session(piston, [{"type": "data", "stream": "stdin", "data": "x"}])
    assert (code_, reason) == (4003, "Not yet initialized")


def test_signal_before_init_closes_4003(piston: Server) -> None:
    _, code_, _ = session(piston, [{"type": "signal", "signal": "SIGKILL"}])
    assert code_ == 4003


def test_data_for_stdout_closes_4004_can_only_write_to_stdin(piston: Server) -> None:
    _, code_, reason = session(piston, [init_frame(RUNS_A_WHILE)], [{"type": "data", "stream": "stdout", "data": "x"}])
    assert (code_, reason) == (4004, "Can only write to stdin")


def test_unknown_signal_closes_4005_invalid_signal(piston: Server) -> None:
    _, code_, reason = session(piston, [init_frame(RUNS_A_WHILE)], [{"type": "signal", "signal": "SIGNOPE"}])
    assert (code_, reason) == (4005, "Invalid signal")


def test_closing_the_socket_does_not_stop_the_job(piston: Server, shared_dir: Path) -> None:
    go, target = shared_dir / "go", shared_dir / "after-disconnect.txt"
    # The program writes its file only once the test says so, after the socket is closed.
    code = ("import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.02)\n"
            "open(sys.argv[2], 'a').write('finished')")
    with connect(piston.ws_url) as ws:
        ws.send(json.dumps(init_frame(code, args=[str(go), str(target)])))
        until_stage(ws)
    go.touch()
    assert wait_until(lambda: target.exists() and target.read_text(), what="the job to write its file") == "finished"


class RawClient:
    """A WebSocket client over a plain socket that sends only what the test says, when it says: unlike the
    websockets client it does not answer the server's close frame by itself."""

    def __init__(self, ws_url: str) -> None:
        uri = parse_uri(ws_url)
        self.protocol = ClientProtocol(uri)
        self.sock = socket.create_connection((uri.host, uri.port), timeout=15)
        self.protocol.send_request(self.protocol.connect())
        self.flush()
        while self.protocol.handshake_exc is None and self.protocol.state is not State.OPEN:
            self.feed()
        assert self.protocol.state is State.OPEN, self.protocol.handshake_exc
        self.protocol.events_received()  # the handshake response

    def flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            self.sock.sendall(chunk)

    def feed(self) -> None:
        data = self.sock.recv(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()

    def send_frame(self, frame: Frame) -> None:
        """Straight onto the socket, bypassing the protocol's state (which forbids data once a close came)."""
        self.sock.sendall(frame.serialize(mask=True))

    def frames_until_close(self) -> list[Frame]:
        frames: list[Frame] = []
        while not frames or frames[-1].opcode is not Opcode.CLOSE:
            self.feed()
            frames.extend(e for e in self.protocol.events_received() if isinstance(e, Frame))
        return frames


def test_after_its_close_frame_the_server_keeps_the_socket_until_the_clients_close_frame(piston: Server) -> None:
    # Piston's `ws` library sends close 4999 and then waits for the peer's close frame before it ends the TCP
    # connection. A server that drops the connection at once resets a client whose stdin reply was still on its
    # way (the relay answering a last call); the client's socket library then loses the frames it had read.
    client = RawClient(piston.ws_url)
    try:
        client.send_frame(Frame(Opcode.TEXT, json.dumps(init_frame("print('done')")).encode()))
        frames = client.frames_until_close()
        assert json.loads(frames[-2].data) == {"type": "exit", "stage": "run", "code": 0, "signal": None}
        assert Close.parse(frames[-1].data).code == 4999
        # Not answered yet: the connection stays open (end-of-stream here, b"", would mean it was not) and a late
        # stdin frame is taken in.
        client.sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            client.sock.recv(1)
        client.send_frame(Frame(Opcode.TEXT, json.dumps(GO).encode()))
        client.send_frame(Frame(Opcode.CLOSE, Close(4999, "").serialize()))
        client.sock.settimeout(15)
        assert client.sock.recv(1) == b"", "after our close frame the server ends the connection cleanly"
    finally:
        client.sock.close()
