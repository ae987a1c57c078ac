"""A run over Piston's WebSocket, ``/api/v2/connect``: output streamed as it comes, stdin open for replies.

What Piston's WebSocket does and a client must live with (docs/piston.md):
- stdin sent before ``stage: run`` is dropped or closes the socket with 4003: it is held back until then;
- it reports no status, so TO / SG / RE are derived from the exit code, signal and wall time;
- it caps no output: ``max_output_chars`` is ours and counts stdout + stderr characters (CAPPED);
- closing the socket does NOT stop the run on the server (nor does a signal, which Piston never
  delivers). So a run that is stopped (``on_stop``), passes its own deadline, or goes over the output cap
  gets the request's ``stop_stdin`` on its stdin (the hub's cancel line: the agent's process ends at once
  and its slot is free), and the socket is read for up to ``STOP_WAIT_S`` more until the exit frame shows
  the process ended. Without ``stop_stdin`` (or a program that ignores it) the program goes on until its
  own limits. We still send a SIGKILL frame, best effort, for servers that honour it (not once the exit
  frame came: nothing is sent after it);
- jobs queue with no timeout: every wait is bounded by run_timeout + execute_margin_s, plus
  execute_margin_s of queue allowance before the run starts; a run_timeout of 0 means "no limit", and
  then there is no deadline once the run started.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from typing import Any

import structlog
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from dispatcher.sandbox.piston.endpoint import Endpoint
from dispatcher.sandbox.piston.http import TRANSIENT_STATUSES
from dispatcher.sandbox.piston.status import STOPPED_ENDED_MESSAGE, STOPPED_MESSAGE, derive_status, tail
from dispatcher.sandbox.port import (
    RunResult,
    RunStatus,
    SandboxError,
    SandboxRefused,
    SandboxRequest,
    SandboxTransient,
    SandboxUnsupported,
    Transport,
)

log = structlog.get_logger("piston")

POLL_S = 0.2  # the stop check is polled at least this often while no frame arrives
EXIT_GRACE_S = 2.0  # after the exit frame, how long late data frames are still read before the 4999 close
CLOSE_TIMEOUT_S = 2.0
ABANDON_CLOSE_TIMEOUT_S = 0.5  # after CAPPED / STOPPED the server's close reply is not worth waiting for
STOP_WAIT_S = 2.0  # after stop_stdin went out, how long the exit frame (the process ended, its slot free) is awaited
DEADLINE_GRACE_S = 1.0  # past run_timeout by this much with no exit frame: the run is ended with stop_stdin
MAX_FRAME_BYTES = 16 * 2**20
PROTOCOL_MISUSE = (4000, 4003, 4004, 4005)  # on our side: retrying repeats it
JOB_COMPLETED = 4999  # Piston's close code once a job ended (its exit frame comes first)


def run_ws(endpoint: Endpoint, request: SandboxRequest) -> RunResult:
    t0 = time.monotonic()
    ws = _open(endpoint)
    with ws:  # websockets 17 deprecates a connection used outside its context manager
        try:
            try:
                ws.send(json.dumps({"type": "init", **endpoint.body(request)}))
            except ConnectionClosed as err:
                raise SandboxTransient(f"WebSocket closed before init was sent: {err}") from err
            run = _WsRun(endpoint, ws, request, t0)
            run.stdin.write(request.stdin)  # Piston ignores stdin in init: it goes out as data after `stage: run`
            # A stop decided in another thread (the heartbeat, shutdown) ends the process at once, even while
            # this thread is busy in a hook (answering a call).
            unsubscribe = request.on_stop(run.send_stop) if request.on_stop is not None else None
            try:
                return run.loop()
            finally:
                if unsubscribe is not None:
                    unsubscribe()
        finally:
            hang_up(ws, CLOSE_TIMEOUT_S)


def hang_up(ws: ClientConnection, close_timeout: float) -> None:
    """Close the socket without waiting for the server's close reply (localpiston and Piston clean the job up
    first). Reading is shut down first: the kernel hands over what it holds, then end-of-stream, so the
    library's reader thread ends by itself. Left to ``close_timeout``, websockets closes the socket from this
    thread, and when the server's reply arrives just then, its reader thread holds data it can no longer feed
    and logs "unexpected internal error" (EOFError: stream ended): seen after capped runs on a loaded machine."""
    with contextlib.suppress(OSError):  # already closed
        ws.socket.shutdown(socket.SHUT_RD)
    ws.close_timeout = close_timeout
    ws.close()  # sends our close frame if the connection is still open; idempotent


def _open(endpoint: Endpoint) -> ClientConnection:
    url = endpoint.ws_url
    try:
        # No keepalive pings: a slow on_stdout stalls reading, and a missed pong would then kill a healthy
        # run; the deadlines below bound a dead server instead.
        return connect(url, open_timeout=endpoint.connect_timeout_s, ping_interval=None, close_timeout=CLOSE_TIMEOUT_S,
                       max_size=MAX_FRAME_BYTES)
    except InvalidStatus as err:
        status = err.response.status_code
        if status in TRANSIENT_STATUSES:
            raise SandboxTransient(f"WebSocket handshake answered HTTP {status}") from err
        raise SandboxUnsupported(f"WebSocket handshake answered HTTP {status}") from err
    except InvalidMessage as err:
        if isinstance(err.__cause__, EOFError | OSError):
            raise SandboxTransient(f"connection dropped during the WebSocket handshake: {err.__cause__!r}") from err
        raise SandboxUnsupported(f"not a WebSocket server: {err}") from err
    except InvalidHandshake as err:
        raise SandboxUnsupported(f"WebSocket handshake refused: {err}") from err
    except InvalidURI as err:
        raise SandboxError(f"bad WebSocket URL {url}: {err}") from err
    except (OSError, TimeoutError) as err:  # refused, reset, DNS, open timeout
        raise SandboxTransient(f"cannot connect to {url}: {err!r}") from err


class _Stdin:
    """Writes stdin frames; holds them back until `stage: run` (earlier ones are dropped or close with 4003),
    and drops them once the exit frame came (the process is gone, and the server may have closed the socket:
    a send into it makes websockets shut the socket from this thread, racing its reader thread)."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._open = False
        self._ended = False

    def write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            if self._ended:
                return
            if not self._open:
                self._pending.append(text)
                return
        self._send(text)

    def open(self) -> None:
        with self._lock:
            self._open = True
            pending, self._pending = self._pending, []
        for text in pending:
            self._send(text)

    def end(self) -> None:
        with self._lock:
            self._ended = True
            self._pending = []

    def _send(self, text: str) -> None:
        try:
            self._ws.send(json.dumps({"type": "data", "stream": "stdin", "data": text}))
        except ConnectionClosed:
            # The read loop reports the closed socket; raising here would only hide that result.
            log.debug("piston_stdin_after_close", chars=len(text))


class _WsRun:
    """One WebSocket run: frames in, hooks out, until exit, cap, stop, error or deadline."""

    def __init__(self, endpoint: Endpoint, ws: ClientConnection, request: SandboxRequest, t0: float) -> None:
        self.endpoint = endpoint
        self.ws = ws
        self.request = request
        self.t0 = t0
        self.stdin = _Stdin(ws)
        self.started = False
        self.run_t0: float | None = None
        self.exit_t: float | None = None
        self.exit: tuple[int | None, str | None] | None = None
        self.error: str | None = None
        self.chars = 0
        self.stderr_tail = ""
        self.hooks_s = 0.0  # time spent in the hooks does not count against the server's deadline
        self._stop_lock = threading.Lock()
        self.stop_sent_at: float | None = None  # when stop_stdin went out (or was queued until `stage: run`)
        self.past_deadline = False  # stop_stdin went out because the run outlived its own time limit

    def send_stop(self) -> None:
        """Write stop_stdin once (held back until `stage: run` if the program has not started). Any thread."""
        if not self.request.stop_stdin:
            return
        with self._stop_lock:
            if self.stop_sent_at is not None:
                return
            self.stop_sent_at = time.monotonic()
        self.stdin.write(self.request.stop_stdin)

    def deadline(self) -> float | None:
        margin = self.endpoint.execute_margin_s
        if self.exit_t is not None:
            return self.exit_t + EXIT_GRACE_S + self.hooks_s
        if self.run_t0 is None:  # queue wait allowance: Piston queues jobs with no timeout
            return self.t0 + self.endpoint.connect_timeout_s + margin + self.hooks_s
        if self.request.limits.run_timeout_ms <= 0:  # 0 = "no limit" to Piston
            return None
        return self.run_t0 + self.request.limits.run_timeout_ms / 1000 + margin + self.hooks_s

    def loop(self) -> RunResult:
        should_stop = self.request.should_stop
        while True:
            if self.exit is None and should_stop is not None and should_stop():
                return self.abandon(RunStatus.STOPPED, STOPPED_MESSAGE)
            self.check_own_deadline()  # every turn: an agent that prints without pause is not exempt
            deadline = self.deadline()
            wait = POLL_S if deadline is None else min(POLL_S, max(0.0, deadline - time.monotonic()))
            try:
                raw = self.ws.recv(timeout=wait)
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    if self.exit is not None:  # exit seen, the 4999 close never came: the result stands
                        return self.finish()
                    raise SandboxTransient(
                        "Piston did not answer in time on the WebSocket" + (" after the run started" if self.started else ""),
                        started=self.started,
                    ) from None
                continue
            except ConnectionClosed as err:
                return self.closed(err)
            result = self.frame(raw)
            if result is not None:
                return result

    def check_own_deadline(self) -> None:
        """Past run_timeout (and a grace) with no exit frame: the server did not end the run, so we do."""
        limit_ms = self.request.limits.run_timeout_ms
        if self.run_t0 is None or self.exit is not None or limit_ms <= 0 or self.stop_sent_at is not None:
            return
        if time.monotonic() >= self.run_t0 + limit_ms / 1000 + DEADLINE_GRACE_S + self.hooks_s:
            self.past_deadline = bool(self.request.stop_stdin)
            log.warning("piston_ws_past_deadline", run_timeout_ms=limit_ms, stopping=self.past_deadline)
            self.send_stop()

    def frame(self, raw: str | bytes) -> RunResult | None:
        try:
            msg = json.loads(raw)
        except ValueError as err:
            raise SandboxError("Piston sent a WebSocket frame that is not JSON") from err
        if not isinstance(msg, dict):
            raise SandboxError("Piston sent a WebSocket frame that is not a JSON object")
        kind = msg.get("type")
        if kind == "runtime":
            log.debug("piston_ws_runtime", language=msg.get("language"), version=msg.get("version"))
        elif kind == "stage" and msg.get("stage") == "run":
            self.started = True
            self.run_t0 = time.monotonic()
            self.stdin.open()
        elif kind == "data":
            return self.data(msg.get("stream"), msg.get("data"))
        elif kind == "exit":
            code, signal = msg.get("code"), msg.get("signal")
            if msg.get("stage", "run") == "run" or code or signal:  # a failed compile ends the job too
                self.exit = (code, signal)
                self.exit_t = time.monotonic()
                self.stdin.end()
        elif kind == "error":
            self.error = str(msg.get("message") or "")
        return None

    def data(self, stream: Any, chunk: Any) -> RunResult | None:
        if not isinstance(chunk, str) or not chunk:
            return None
        cap = self.endpoint.max_output_chars
        room = cap - self.chars
        capped = len(chunk) > room
        if capped:
            # Deliver up to the cap (one pipe read can carry 64 kB, dropping it whole could deliver nothing).
            chunk = chunk[: max(0, room)]
        self.chars += len(chunk)
        t = time.monotonic()
        if chunk and stream == "stdout":
            if self.request.on_stdout is not None:
                self.request.on_stdout(chunk, self.stdin)
        elif chunk and stream == "stderr":
            self.stderr_tail = tail(self.stderr_tail + chunk, self.endpoint.stderr_tail_chars)
            if self.request.on_stderr is not None:
                self.request.on_stderr(chunk)
        self.hooks_s += time.monotonic() - t
        if capped:
            return self.abandon(
                RunStatus.CAPPED,
                f"Output exceeded {cap} characters; stopped reading (the run goes on server-side until its limits)",
            )
        return None

    def abandon(self, status: RunStatus, message: str) -> RunResult:
        """Stop the run: stop_stdin (the process ends), wait briefly for its exit, ask for a kill (Piston ignores
        it, a better server may not) and close."""
        self.send_stop()
        ended = self.await_exit() if self.stop_sent_at is not None else False
        if not ended and self.exit is None:  # once it ended, the server may have closed the socket: nothing to kill
            with contextlib.suppress(ConnectionClosed):
                self.ws.send(json.dumps({"type": "signal", "signal": "SIGKILL"}))
        hang_up(self.ws, ABANDON_CLOSE_TIMEOUT_S)
        waited_ms = None if self.stop_sent_at is None else round((time.monotonic() - self.stop_sent_at) * 1000, 1)
        log.info("piston_ws_abandoned", status=str(status), started=self.started, output_chars=self.chars,
                 process_ended=ended, stop_to_close_ms=waited_ms)
        if ended:
            message = STOPPED_ENDED_MESSAGE if status is RunStatus.STOPPED else message.split(" (the run goes on")[0]
        return self.result(status, None, None, message)

    def await_exit(self) -> bool:
        """After stop_stdin: read (and drop) frames until the exit frame or the close, for up to STOP_WAIT_S.
        True when the process is known to have ended (its Piston slot is free)."""
        assert self.stop_sent_at is not None
        until = self.stop_sent_at + STOP_WAIT_S
        while self.exit is None:
            left = until - time.monotonic()
            if left <= 0:
                return False
            try:
                raw = self.ws.recv(timeout=left)
            except TimeoutError:
                return False
            except ConnectionClosed as err:
                return err.rcvd is not None and err.rcvd.code == JOB_COMPLETED
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("type") != "data":  # the output of a stopped run is not wanted
                self.frame(raw)
        return True

    def closed(self, err: ConnectionClosed) -> RunResult:
        close_code = err.rcvd.code if err.rcvd is not None else 1006
        reason = err.rcvd.reason if err.rcvd is not None else ""
        if self.exit is not None:
            return self.finish()
        if self.error is not None or close_code == 4002:
            message = self.error or reason or "Piston reported an error"
            if self.started:  # failed after the program started: report it as a sandbox error, not a refusal
                return self.result(RunStatus.XX, None, None, message)
            raise SandboxRefused(message)
        if close_code == JOB_COMPLETED:
            # The job ran to its end, but its exit frame was lost on the way to us. Running it again would repeat
            # whatever the agent did, so this is a failed run, not a transient fault.
            log.warning("piston_ws_exit_frame_lost", started=self.started, output_chars=self.chars)
            message = f"Piston ended the job ({close_code} {reason}) but its exit frame never arrived: exit status unknown"
            if self.started:
                return self.result(RunStatus.XX, None, None, message)
            raise SandboxError(message)
        if close_code in PROTOCOL_MISUSE:
            raise SandboxError(f"Piston closed the WebSocket: {close_code} {reason}".strip())
        raise SandboxTransient(
            f"WebSocket closed {'mid-run' if self.started else 'before the run started'} ({close_code} {reason})".strip(),
            started=self.started,
        )

    def finish(self) -> RunResult:
        assert self.exit is not None
        code, signal = self.exit
        if self.past_deadline:  # ended by our stop_stdin at its time limit: a time-out, whatever its exit code
            return self.result(RunStatus.TO, code, signal, "Time limit exceeded")
        if self.stop_sent_at is not None:  # stopped from another thread; its exit came before this loop looked
            return self.result(RunStatus.STOPPED, code, signal, STOPPED_ENDED_MESSAGE)
        status, message = derive_status(code, signal, self.wall_ms(), self.request.limits)
        return self.result(status, code, signal, message)

    def wall_ms(self) -> float:
        end = self.exit_t if self.exit_t is not None else time.monotonic()
        return (end - (self.run_t0 if self.run_t0 is not None else self.t0)) * 1000

    def result(self, status: RunStatus, code: int | None, signal: str | None, message: str | None) -> RunResult:
        return RunResult(transport=Transport.WS, status=status, code=code, signal=signal, message=message, stdout="",
                         stderr_tail=self.stderr_tail, wall_ms=self.wall_ms(), cpu_ms=None, memory_bytes=None,
                         started=self.started)
