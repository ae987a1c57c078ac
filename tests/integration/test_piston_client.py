"""The Piston sandbox (dispatcher/sandbox/piston/) against a real localpiston subprocess: both transports,
statuses, caps, errors, retries, and auto's fallback (dispatcher/sandbox/auto.py)."""

from __future__ import annotations

import contextlib
import json
import socket
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import structlog
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve
from websockets.utils import accept_key

from dispatcher.sandbox.auto import AutoTransport
from dispatcher.sandbox.piston.client import PistonClient
from dispatcher.sandbox.piston.ws import hang_up
from dispatcher.sandbox.port import (
    RunLimits,
    RunResult,
    RunStatus,
    Sandbox,
    SandboxError,
    SandboxRefused,
    SandboxRequest,
    SandboxTransient,
    SandboxUnsupported,
    StdinWriter,
    Transport,
)
from dispatcher.sandbox.retry import retrying
from tests.integration.localpiston_proc import LocalPiston, free_port, start_localpiston
from tests.waiting import wait_until

LIMITS = RunLimits(run_timeout_ms=3000)
# On `own_piston`: a run that outlasts every step of its test, so "it is still running" can be checked.
LONG = RunLimits(run_timeout_ms=60_000)
BOTH = [Transport.WS, Transport.EXECUTE]


def program(source: str) -> list[dict]:
    return [{"name": "main.py", "content": textwrap.dedent(source)}]


def run(sandbox: Sandbox | AutoTransport, files: list[dict], limits: RunLimits, **request: object) -> RunResult:
    """One run through the sandbox port: everything about it in one request."""
    return sandbox.run(SandboxRequest(files, limits, **request))


def running(marker: str) -> bool:
    """A sandboxed program started with ``marker`` among its arguments is still running (Linux /proc)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():  # a zombie's cmdline is empty
                return True
        except OSError:  # ended meanwhile
            continue
    return False


@pytest.fixture(scope="module")
def piston() -> Iterator[LocalPiston]:
    with start_localpiston() as server:
        yield server


@pytest.fixture
def own_piston() -> Iterator[LocalPiston]:
    """A server of this test's own, free to be stopped and restarted, that allows LONG runs."""
    with start_localpiston({"PISTON_RUN_TIMEOUT": "60000"}) as server:
        yield server
        server.kill()  # with its sandboxes: a test may leave a LONG run going


@pytest.fixture
def client(piston: LocalPiston) -> PistonClient:
    return PistonClient(piston.url)


class Lines:
    """Collects streamed chunks and splits them into lines, as the dispatcher does."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.buffer = ""
        self.lines: list[str] = []

    def feed(self, chunk: str) -> list[str]:
        self.chunks.append(chunk)
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split("\n")
        self.lines.extend(complete)
        return complete


# ---- runtimes --------------------------------------------------------------------------------------


def test_runtimes_lists_python_and_has_python_is_true(client: PistonClient) -> None:
    assert any(rt["language"] == "python" for rt in client.runtimes())
    assert client.has_python()


# ---- WebSocket: streaming and stdin ----------------------------------------------------------------


def test_ws_streams_stdout_chunks_as_they_arrive_and_reports_ok(client: PistonClient) -> None:
    # Each line waits for our answer to the one before: the run can only end OK if every line reached
    # on_stdout during the run (output delivered at the end would leave it waiting until its time limit).
    src = """
        import sys
        for i in range(3):
            print(f"line {i}", flush=True)
            sys.stdin.readline()
    """
    lines = Lines()

    def on_stdout(chunk: str, writer: StdinWriter) -> None:
        for _ in lines.feed(chunk):
            writer.write("next\n")

    result = run(client, program(src), LIMITS, transport=Transport.WS, on_stdout=on_stdout)
    assert result.status is RunStatus.OK
    assert (result.transport, result.code, result.signal, result.started) == (Transport.WS, 0, None, True)
    assert result.stdout == ""
    assert lines.lines == ["line 0", "line 1", "line 2"]
    assert len(lines.chunks) >= 3


def test_ws_stdin_written_from_inside_on_stdout_reaches_the_program(client: PistonClient) -> None:
    src = """
        import sys
        print("ready", flush=True)
        for line in sys.stdin:
            line = line.strip()
            if line == "quit":
                break
            print("echo:" + line, flush=True)
    """
    lines = Lines()
    replies = {"ready": "a\n", "echo:a": "b\n", "echo:b": "quit\n"}

    def on_stdout(chunk: str, writer: StdinWriter) -> None:
        for line in lines.feed(chunk):
            writer.write(replies[line])

    result = run(client, program(src), LIMITS, transport=Transport.WS, on_stdout=on_stdout)
    assert result.status is RunStatus.OK
    assert lines.lines == ["ready", "echo:a", "echo:b"]


def test_ws_initial_stdin_is_held_until_stage_run_and_then_delivered(client: PistonClient) -> None:
    src = """
        import sys
        print("got:" + sys.stdin.readline().strip(), flush=True)
    """
    lines = Lines()
    result = run(client, program(src), LIMITS, transport=Transport.WS, stdin="hello\n", on_stdout=lambda c, _w: lines.feed(c))
    assert result.status is RunStatus.OK
    assert lines.lines == ["got:hello"]


def test_ws_streams_stderr_to_on_stderr_and_keeps_its_tail(piston: LocalPiston) -> None:
    client = PistonClient(piston.url, stderr_tail_chars=10)
    src = """
        import sys
        sys.stderr.write("0123456789abcdefghij\\n")
    """
    chunks: list[str] = []
    result = run(client, program(src), LIMITS, transport=Transport.WS, on_stderr=chunks.append)
    assert "".join(chunks) == "0123456789abcdefghij\n"
    assert result.stderr_tail == "bcdefghij\n"


# ---- WebSocket: derived statuses, cap, stop --------------------------------------------------------


def test_ws_exit_code_3_is_re_with_pistons_wording(client: PistonClient) -> None:
    result = run(client, program("raise SystemExit(3)"), LIMITS, transport=Transport.WS)
    assert (result.status, result.code, result.signal) == (RunStatus.RE, 3, None)
    assert result.message == "Exited with error status 3"


def test_ws_sigkill_at_the_time_limit_is_derived_as_to(client: PistonClient) -> None:
    src = """
        import time
        while True:
            time.sleep(0.05)
    """
    result = run(client, program(src), RunLimits(run_timeout_ms=800), transport=Transport.WS)
    assert (result.status, result.code, result.signal) == (RunStatus.TO, None, "SIGKILL")
    assert result.message == "Time limit exceeded"
    assert result.wall_ms >= 700


def test_ws_early_sigkill_is_derived_as_sg_not_to(client: PistonClient) -> None:
    # Killing Piston's bash wrapper gives what an early kill looks like: no code, SIGKILL, far from the limit.
    src = """
        import os, signal
        os.kill(os.getppid(), signal.SIGKILL)
    """
    result = run(client, program(src), LIMITS, transport=Transport.WS)
    assert (result.status, result.code, result.signal) == (RunStatus.SG, None, "SIGKILL")
    assert result.message == "Caught fatal signal 9"  # isolate's wording, as /execute reports it


def test_ws_output_past_max_output_chars_is_capped_and_reading_stops(own_piston: LocalPiston) -> None:
    client = PistonClient(own_piston.url, max_output_chars=10_000)
    marker = f"capped-{uuid.uuid4().hex}"
    src = """
        import sys
        for _ in range(200):
            sys.stdout.write("x" * 1000 + "\\n")
            sys.stdout.flush()
        sys.stdin.readline()  # never answered: runs on until its limit
    """
    received: list[str] = []
    result = run(client, program(src), LONG, transport=Transport.WS, args=[marker],
                        on_stdout=lambda c, _w: received.append(c))
    assert result.status is RunStatus.CAPPED
    assert result.started
    assert sum(map(len, received)) == 10_000  # exactly up to the cap, then nothing
    assert running(marker)  # back while the program still runs: it did not wait for the run to end


def test_ws_should_stop_ends_the_run_as_stopped_without_waiting_for_it(own_piston: LocalPiston) -> None:
    marker = f"stopped-{uuid.uuid4().hex}"
    src = """
        import sys
        print("started", flush=True)
        sys.stdin.readline()  # never answered: silent until its limit
    """
    seen: list[str] = []
    polls_after_output = 0

    def should_stop() -> bool:
        # True only on the third check after the last frame: the first follows the frame at once, the later
        # ones can only come from polling while no frame arrives.
        nonlocal polls_after_output
        polls_after_output += bool(seen)
        return polls_after_output >= 3

    result = run(
        PistonClient(own_piston.url),
        program(src),
        LONG,
        transport=Transport.WS,
        args=[marker],
        on_stdout=lambda c, _w: seen.append(c),
        should_stop=should_stop,
    )
    assert result.status is RunStatus.STOPPED
    assert result.started
    assert seen == ["started\n"]
    assert running(marker)  # back while the program still runs


# ---- /execute: statuses from the server ------------------------------------------------------------


def test_execute_returns_whole_stdout_and_calls_on_stdout_once_with_a_refusing_writer(client: PistonClient) -> None:
    calls: list[str] = []
    refusals: list[str] = []

    def on_stdout(chunk: str, writer: StdinWriter) -> None:
        calls.append(chunk)
        try:
            writer.write("x\n")
        except SandboxError as err:
            refusals.append(str(err))

    src = """
        import sys
        print("a"); print("b"); print("in:" + sys.stdin.read().strip())
    """
    result = run(client, program(src), LIMITS, transport=Transport.EXECUTE, stdin="hi", on_stdout=on_stdout)
    assert (result.status, result.transport, result.code, result.started) == (RunStatus.OK, Transport.EXECUTE, 0, True)
    assert result.stdout == "a\nb\nin:hi\n"
    assert calls == ["a\nb\nin:hi\n"]
    assert refusals == ["stdin is only available on the WebSocket transport"]


def test_execute_non_zero_exit_is_re_with_pistons_message(client: PistonClient) -> None:
    result = run(client, program("raise SystemExit(3)"), LIMITS, transport=Transport.EXECUTE)
    assert (result.status, result.code) == (RunStatus.RE, 3)
    assert result.message == "Exited with error status 3"


def test_execute_time_limit_is_to(client: PistonClient) -> None:
    result = run(client, program("while True: pass"), RunLimits(run_timeout_ms=500), transport=Transport.EXECUTE)
    assert (result.status, result.signal, result.code) == (RunStatus.TO, "SIGKILL", None)
    assert result.message.startswith("Time limit exceeded")  # isolate adds " (wall clock)" for wall time-outs


def test_execute_stdout_over_the_servers_1024_char_cap_is_ol_not_ok(client: PistonClient) -> None:
    result = run(client, program("print('x' * 5000)"), LIMITS, transport=Transport.EXECUTE)
    assert result.status is RunStatus.OL
    assert result.signal == "SIGKILL"


def test_execute_should_stop_abandons_the_request_as_stopped(own_piston: LocalPiston) -> None:
    marker = f"abandoned-{uuid.uuid4().hex}"
    result = run(
        PistonClient(own_piston.url),
        program("import time; time.sleep(60)"),
        LONG,
        transport=Transport.EXECUTE,
        args=[marker],
        should_stop=lambda: running(marker),  # the request is in, its program runs: stop now
    )
    assert result.status is RunStatus.STOPPED
    assert running(marker)  # the request was abandoned, not waited for


def test_execute_stop_cuts_the_request_short_and_leaves_no_thread_waiting_for_it(own_piston: LocalPiston) -> None:
    marker = f"cut-{uuid.uuid4().hex}"
    client = PistonClient(own_piston.url)
    result = run(client, program("import time; time.sleep(60)"), LONG, transport=Transport.EXECUTE, args=[marker],
                 should_stop=lambda: running(marker))
    assert result.status is RunStatus.STOPPED
    assert running(marker)  # the program goes on server-side, but nothing here waits for its answer any more
    wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("piston-")],
               what="no thread left waiting for the stopped request", details=threading.enumerate)
    # The cut connection is dropped, not handed to the next run: that one is answered normally.
    after = run(client, program("print('next')"), LIMITS, transport=Transport.EXECUTE)
    assert (after.status, after.stdout) == (RunStatus.OK, "next\n")


def test_execute_runs_share_one_pooled_keep_alive_connection(client: PistonClient) -> None:
    for i in range(3):
        assert run(client, program(f"print({i})"), LIMITS, transport=Transport.EXECUTE).stdout == f"{i}\n"
    pools = client.http.session.get_adapter(client.endpoint.api).poolmanager.pools
    # keys(): urllib3's pool container refuses plain iteration.
    assert [(pools[key].num_requests, pools[key].num_connections) for key in pools.keys()] == [(3, 1)]  # noqa: SIM118


# ---- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", BOTH)
def test_a_run_asking_more_than_the_servers_limit_runs_at_it_and_the_limit_is_learned_once(
    piston: LocalPiston, transport: Transport
) -> None:
    client = PistonClient(piston.url)  # a client of its own: nothing learned yet
    with structlog.testing.capture_logs() as logs:
        first = run(client, program("print(1)"), RunLimits(run_timeout_ms=5000), transport=transport)
        second = run(client, program("print(2)"), RunLimits(run_timeout_ms=60_000), transport=transport)
    assert (first.status, second.status) == (RunStatus.OK, RunStatus.OK)
    assert first.limits == second.limits == RunLimits(run_timeout_ms=3000)  # what the runs really got
    assert first.server == client.name == piston.url
    learned = [e for e in logs if e["event"] == "piston_limit_learned"]
    assert [(e["field"], e["limit"], e["server"]) for e in learned] == [("run_timeout", 3000, piston.url)]
    # Only the first run was refused: the second went out lowered.
    assert [e["run_timeout_ms"] for e in logs if e["event"] == "piston_run_start"] == [5000, 3000, 3000]


def test_a_run_within_the_servers_limit_reports_no_lowered_limits(client: PistonClient) -> None:
    assert run(client, program("print(1)"), LIMITS, transport=Transport.EXECUTE).limits is None


@pytest.mark.parametrize("transport", BOTH)
def test_unknown_runtime_version_is_refused(piston: LocalPiston, transport: Transport) -> None:
    client = PistonClient(piston.url, version="9")
    with pytest.raises(SandboxRefused, match="python-9 runtime is unknown"):
        run(client, program("print(1)"), LIMITS, transport=transport)


def test_execute_body_over_100kb_is_refused_naming_payload_too_large(client: PistonClient) -> None:
    big = "# " + "x" * 120_000 + "\nprint(1)\n"
    with pytest.raises(SandboxRefused, match="Piston rejected the request body: PayloadTooLargeError"):
        run(client, program(big), LIMITS, transport=Transport.EXECUTE)


# ---- transient failures and retries ----------------------------------------------------------------


@pytest.mark.parametrize("transport", BOTH)
def test_connection_refused_is_transient_and_not_started(transport: Transport) -> None:
    client = PistonClient(f"http://127.0.0.1:{free_port()}", connect_timeout_s=2)
    with pytest.raises(SandboxTransient) as caught:
        run(client, program("print(1)"), LIMITS, transport=transport)
    assert caught.value.started is False


def test_execute_empty_500_is_transient(client: PistonClient) -> None:
    # Piston answers a file name escaping the box (or a sandbox failure) with 500 and an empty body.
    files = [{"name": "../escape.py", "content": "print(1)"}]
    with pytest.raises(SandboxTransient, match="HTTP 500"):
        run(client, files, LIMITS, transport=Transport.EXECUTE)


def test_ws_server_that_never_answers_is_transient_once_the_deadline_passes() -> None:
    def silent(ws: ServerConnection) -> None:
        ws.recv()  # the init
        with contextlib.suppress(ConnectionClosed):
            ws.recv()  # then nothing, until the client gives up

    with serve(silent, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        client = PistonClient(f"http://127.0.0.1:{port}", connect_timeout_s=0.5, execute_margin_s=0.5)
        t0 = time.monotonic()
        with pytest.raises(SandboxTransient) as caught:
            run(client, program("print(1)"), LIMITS, transport=Transport.WS)
        elapsed = time.monotonic() - t0
        server.shutdown()
    assert caught.value.started is False
    # Not before the connect + queue allowances (1 s), and not never: generous (10x) for a loaded machine.
    assert 1.0 <= elapsed < 10.0


def test_ws_hang_up_ends_the_readers_thread_itself_without_waiting_out_the_close_timeout() -> None:
    """After a stop or a cap the server may not answer our close frame for a while (localpiston and Piston
    clean the job up first). Closing by websockets' close timeout then shuts the socket from the caller's
    thread while the library's reader thread may hold data just read, and the library logs "unexpected
    internal error" (EOFError: stream ended; seen in the hostile-agents suite on a loaded machine). hang_up
    shuts reading first, so the reader ends on end-of-stream and close() does not wait for the timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def mute_server() -> None:
        """The opening handshake, then silence: no close reply, ever (a raw socket: a websockets server
        would answer the close frame by itself)."""
        conn, _ = listener.accept()
        held.append(conn)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(line.split(b":", 1)[1].strip().decode() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n")

    server = threading.Thread(target=mute_server, daemon=True)
    server.start()
    try:
        with connect(f"ws://127.0.0.1:{listener.getsockname()[1]}", open_timeout=10) as ws:
            t0 = time.monotonic()
            hang_up(ws, close_timeout=30.0)
            elapsed = time.monotonic() - t0
    finally:
        for conn in held:
            conn.close()
        listener.close()
    assert elapsed < 15.0, elapsed  # well under the 30 s close timeout: the reader did not need it
    assert not isinstance(ws.connection_exc, TimeoutError), ws.connection_exc


def test_ws_sends_nothing_more_once_the_exit_frame_came() -> None:
    """A capped run is stopped with stop_stdin; once its exit frame came, no SIGKILL frame follows:
    the process is gone and the server may have closed the socket (a send into a closed socket made websockets
    shut it from the sending thread, racing the library's reader: "unexpected internal error")."""
    received: list[dict] = []

    def capped_then_exit(ws: ServerConnection) -> None:
        received.append(json.loads(ws.recv()))  # the init
        ws.send(json.dumps({"type": "runtime", "language": "python", "version": "3.11.2"}))
        ws.send(json.dumps({"type": "stage", "stage": "run"}))
        ws.send(json.dumps({"type": "data", "stream": "stdout", "data": "x" * 2000}))  # past the cap
        with contextlib.suppress(ConnectionClosed):
            received.append(json.loads(ws.recv()))  # the stop line on stdin
            ws.send(json.dumps({"type": "exit", "stage": "run", "code": 0, "signal": None}))
            while True:  # record whatever else comes, until the client hangs up
                raw = ws.recv()
                received.append(json.loads(raw))

    with serve(capped_then_exit, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        client = PistonClient(f"http://127.0.0.1:{port}", max_output_chars=1000)
        result = run(client, program("print(1)"), LIMITS, transport=Transport.WS, stop_stdin="STOP\n")
        wait_until(lambda: len(received) >= 2, timeout=10)
        server.shutdown()
    assert result.status is RunStatus.CAPPED
    assert [m["type"] for m in received] == ["init", "data"], received  # no "signal" after the exit frame
    assert received[1]["data"] == "STOP\n"


def test_ws_4999_close_without_its_exit_frame_is_a_failed_run_not_a_transient_fault() -> None:
    """4999 "Job Completed" means the job ran to its end; if its exit frame got lost on our side (websockets
    drops the frames of a read whose automatic close reply fails), running it again would repeat what the
    agent did. So: a sandbox-error result, and the retrying loop does not connect a second time."""
    connections: list[int] = []

    def completed_without_exit(ws: ServerConnection) -> None:
        connections.append(1)
        ws.recv()  # the init
        ws.send(json.dumps({"type": "runtime", "language": "python", "version": "3.11.2"}))
        ws.send(json.dumps({"type": "stage", "stage": "run"}))
        ws.send(json.dumps({"type": "data", "stream": "stdout", "data": "did something\n"}))
        ws.close(4999, "Job Completed")

    with serve(completed_without_exit, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        client = PistonClient(f"http://127.0.0.1:{server.socket.getsockname()[1]}")
        chunks: list[str] = []
        result: RunResult | None = None
        for attempt in retrying(attempts=3, base_s=0.01, max_s=0.02):
            with attempt:
                result = run(client, program("print(1)"), LIMITS, transport=Transport.WS,
                             on_stdout=lambda chunk, _writer: chunks.append(chunk))
        server.shutdown()
    assert result is not None and result.status is RunStatus.XX, result
    assert result.message == ("Piston ended the job (4999 Job Completed) but its exit frame never arrived: "
                              "exit status unknown")
    assert (result.started, result.code, result.signal) == (True, None, None)
    assert chunks == ["did something\n"]
    assert len(connections) == 1


def test_server_killed_during_a_ws_run_is_transient_with_started_true(own_piston: LocalPiston) -> None:
    client = PistonClient(own_piston.url)
    src = """
        import sys
        print("go", flush=True)
        sys.stdin.readline()  # never answered: only the server's death ends the run
    """
    stopper: list[threading.Thread] = []

    def on_stdout(chunk: str, _writer: StdinWriter) -> None:
        if not stopper:
            stopper.append(threading.Thread(target=own_piston.kill))
            stopper[0].start()

    try:
        with pytest.raises(SandboxTransient) as caught:
            run(client, program(src), LONG, transport=Transport.WS, on_stdout=on_stdout)
    finally:
        for thread in stopper:
            thread.join()
    assert caught.value.started is True


def test_retrying_retries_a_transient_failure_until_the_server_is_back(own_piston: LocalPiston) -> None:
    client = PistonClient(own_piston.url, connect_timeout_s=1)
    own_piston.stop()
    attempts = 0
    for attempt in retrying(attempts=5, base_s=0.01, max_s=0.02):
        with attempt:
            attempts += 1
            if attempts == 3:  # two tries met the stopped server; it is back (start() waits until it answers)
                own_piston.start()
            result = run(client, program("print('back')"), LIMITS, transport=Transport.WS)
    assert result.status is RunStatus.OK
    assert attempts == 3


def test_retrying_does_not_retry_a_refusal(client: PistonClient) -> None:
    attempts = 0
    with pytest.raises(SandboxRefused):
        for attempt in retrying(attempts=5, base_s=0.01, max_s=0.02):
            with attempt:
                attempts += 1
                run(PistonClient(client.endpoint.api, version="9"), program("print(1)"), LIMITS,
                    transport=Transport.EXECUTE)
    assert attempts == 1


def test_retrying_gives_up_after_the_given_attempts_and_reraises() -> None:
    client = PistonClient(f"http://127.0.0.1:{free_port()}", connect_timeout_s=1)
    attempts = 0
    with pytest.raises(SandboxTransient):
        for attempt in retrying(attempts=3, base_s=0.01, max_s=0.02):
            with attempt:
                attempts += 1
                run(client, program("print(1)"), LIMITS, transport=Transport.EXECUTE)
    assert attempts == 3


# ---- AUTO fallback ---------------------------------------------------------------------------------


class NoWebSocketProxy:
    """An HTTP-only front for localpiston: /api/v2/connect is a 404, everything else is forwarded."""

    def __init__(self, upstream: str) -> None:
        self.hits: dict[str, int] = {}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.forward("GET")

            def do_POST(self) -> None:
                self.forward("POST")

            def forward(self, method: str) -> None:
                proxy.hits[self.path] = proxy.hits.get(self.path, 0) + 1
                if self.path == "/api/v2/connect":
                    self.reply(404, json.dumps({"message": "Not Found"}).encode(), "application/json")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                resp = requests.request(
                    method, upstream + self.path, data=body, headers={"Content-Type": "application/json"}, timeout=30
                )
                self.reply(resp.status_code, resp.content, resp.headers.get("Content-Type", "application/json"))

            def reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def no_ws_proxy(piston: LocalPiston) -> Iterator[NoWebSocketProxy]:
    proxy = NoWebSocketProxy(piston.url)
    yield proxy
    proxy.close()


def test_ws_transport_without_a_websocket_endpoint_raises_unsupported(no_ws_proxy: NoWebSocketProxy) -> None:
    with pytest.raises(SandboxUnsupported):
        run(PistonClient(no_ws_proxy.url), program("print(1)"), LIMITS, transport=Transport.WS)


def test_auto_falls_back_to_execute_without_a_websocket_endpoint_and_remembers_it(no_ws_proxy: NoWebSocketProxy) -> None:
    client = AutoTransport(PistonClient(no_ws_proxy.url))
    first = run(client, program("print('one')"), LIMITS, transport=Transport.AUTO)
    second = run(client, program("print('two')"), LIMITS, transport=Transport.AUTO)
    assert (first.transport, first.status, first.stdout) == (Transport.EXECUTE, RunStatus.OK, "one\n")
    assert (second.transport, second.stdout) == (Transport.EXECUTE, "two\n")
    assert no_ws_proxy.hits == {"/api/v2/connect": 1, "/api/v2/execute": 2}


def test_auto_uses_the_websocket_when_the_server_has_it(client: PistonClient) -> None:
    result = run(AutoTransport(client), program("print('ws')"), LIMITS, transport=Transport.AUTO)
    assert result.transport is Transport.WS
