"""Piston client for the dispatcher: streaming runs over the WebSocket, batch runs over /execute, retry policy.

Every quirk listed in docs/piston.md is handled here so that callers see one shape (`RunResult`) and three
kinds of failure: `PistonTransient` (retry), `PistonRefused` (the request itself is wrong, do not retry) and
`PistonUnsupported` (no WebSocket endpoint; AUTO falls back to /execute).

Things a caller must know:
- Closing the WebSocket does NOT stop the run on the server (Piston never delivers signals either): after
  CAPPED or STOPPED the program goes on until its own limits. We still send a SIGKILL frame, best effort,
  for servers that honour it.
- Piston's WebSocket reports no status, so TO / SG / RE are derived from the exit code, signal and wall time.
- Piston's WebSocket has no output cap; `max_output_chars` is ours and counts stdout + stderr characters.
- Piston queues jobs with no timeout, so every wait here is bounded by run_timeout + execute_margin_s
  (plus execute_margin_s of queue allowance before the run starts on the WebSocket).
- A run_timeout of 0 means "no limit" to Piston; the client then waits without a deadline once the run started.
- File contents and stdin are never logged.
"""

from __future__ import annotations

import contextlib
import json
import signal as signals
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import requests
import structlog
import tenacity
import urllib3.exceptions
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

log = structlog.get_logger("piston")

POLL_S = 0.2  # should_stop() is polled at least this often while no frame arrives
EXIT_GRACE_S = 2.0  # after the exit frame, how long we keep reading late data frames before the 4999 close
TO_FRACTION = 0.9  # a SIGKILL after this share of the time limit is a time-out, earlier it is a plain signal
WS_CLOSE_TIMEOUT_S = 2.0
ABANDON_CLOSE_TIMEOUT_S = 0.5  # after CAPPED / STOPPED the server's close reply is not worth waiting for
WS_MAX_FRAME_BYTES = 16 * 2**20
STDIN_ON_EXECUTE = "stdin is only available on the WebSocket transport"


class Transport(StrEnum):
    WS = "ws"
    EXECUTE = "execute"
    AUTO = "auto"


class RunStatus(StrEnum):
    OK = "OK"
    RE = "RE"  # non-zero exit
    SG = "SG"  # killed by a signal
    TO = "TO"  # time limit
    OL = "OL"  # stdout over Piston's output cap (/execute only)
    EL = "EL"  # stderr over Piston's output cap (/execute only)
    XX = "XX"  # sandbox error
    CAPPED = "CAPPED"  # our own client-side output cap hit on the WebSocket: we stopped reading
    STOPPED = "STOPPED"  # should_stop() returned True: we stopped reading


@dataclass(frozen=True)
class RunLimits:
    run_timeout_ms: int
    run_cpu_time_ms: int | None = None
    run_memory_limit: int | None = None


@dataclass(frozen=True)
class RunResult:
    transport: Transport
    status: RunStatus
    code: int | None
    signal: str | None
    message: str | None  # Piston's message, or ours e.g. "Time limit exceeded"
    stdout: str  # execute: the whole stdout as returned; ws: "" (streamed through on_stdout)
    stderr_tail: str  # last stderr_tail_chars characters of stderr
    wall_ms: float
    cpu_ms: float | None
    memory_bytes: int | None
    started: bool  # whether the run actually started (ws: stage run seen; execute: a response came back)


class PistonError(Exception):
    """Base of every error raised by this client."""


class PistonTransient(PistonError):
    """Worth retrying: the server was unreachable, overloaded, or dropped the connection."""

    def __init__(self, message: str, *, started: bool = False) -> None:
        super().__init__(message)
        self.started = started  # True when the program may already have run (side effects possible)


class PistonRefused(PistonError):
    """Piston refused the request itself; retrying the same request cannot succeed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PistonUnsupported(PistonError):
    """The server (or a proxy in front of it) has no WebSocket endpoint."""


class StdinWriter(Protocol):
    def write(self, text: str) -> None: ...


StdoutCallback = Callable[[str, StdinWriter], None]
StderrCallback = Callable[[str], None]
StopCheck = Callable[[], bool]


class _NoStdin:
    """The writer handed to on_stdout on /execute: there is no live stdin there."""

    def write(self, text: str) -> None:
        raise PistonError(STDIN_ON_EXECUTE)


class _WsStdin:
    """Writes stdin frames; holds them back until `stage: run` (earlier ones are dropped or close with 4003)."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._open = False

    def write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
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

    def _send(self, text: str) -> None:
        try:
            self._ws.send(json.dumps({"type": "data", "stream": "stdin", "data": text}))
        except ConnectionClosed:
            # The read loop reports the closed socket; raising here would only hide that result.
            log.debug("piston_stdin_after_close", chars=len(text))


def derive_status(code: int | None, signal: str | None, wall_ms: float | None, limits: RunLimits) -> tuple[RunStatus, str | None]:
    """Status for servers that report none (the WebSocket, /execute before 2024-09), worded as Piston's isolate.

    A SIGKILL with no exit code is a time-out only when it came near the smallest time limit we asked for (the
    server's own run_cpu_time is not known here, so a CPU kill under a longer run_timeout reads as SG).
    """
    if signal:
        if signal == "SIGKILL" and code is None and wall_ms is not None:
            time_limits = [ms for ms in (limits.run_timeout_ms, limits.run_cpu_time_ms) if ms and ms > 0]
            if time_limits and wall_ms >= TO_FRACTION * min(time_limits):
                return RunStatus.TO, "Time limit exceeded"
        number = getattr(signals.Signals, signal, None)
        return RunStatus.SG, (f"Caught fatal signal {int(number)}" if number else f"Killed by signal {signal}")
    if code:
        return RunStatus.RE, f"Exited with error status {code}"
    return RunStatus.OK, None


def _tail(text: str, limit: int) -> str:
    return text[-limit:] if limit > 0 else ""


def _api_base(base_url: str) -> str:
    """`http://host:2000`, `http://host:2000/` and `http://host:2000/api/v2` all mean the same server."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"Piston URL must be http:// or https://host[:port], got {base_url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/api/v2"):
        path = path[: -len("/api/v2")]
    return urlunsplit((parts.scheme, parts.netloc, path + "/api/v2", "", ""))


def _never_connected(err: requests.ConnectionError) -> bool:
    """True when the TCP connection was never made (refused, DNS), so nothing can have run."""
    reason = err.args[0] if err.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _json_or_none(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


class PistonClient:
    def __init__(
        self,
        base_url: str,
        *,
        language: str = "python",
        version: str = "*",
        connect_timeout_s: float = 5.0,
        execute_margin_s: float = 30.0,
        max_output_chars: int = 1_000_000,
        stderr_tail_chars: int = 4000,
    ) -> None:
        self.api = _api_base(base_url)
        self.ws_url = "ws" + self.api[len("http") :] + "/connect"  # http→ws, https→wss
        self.language = language
        self.version = version
        self.connect_timeout_s = connect_timeout_s
        self.execute_margin_s = execute_margin_s
        self.max_output_chars = max_output_chars
        self.stderr_tail_chars = stderr_tail_chars
        self._auto_choice: Transport | None = None  # set once AUTO had to fall back to EXECUTE

    # ---- runtimes -------------------------------------------------------------------------------

    def runtimes(self) -> list[dict[str, Any]]:
        """GET /api/v2/runtimes. (Never /api/v2/packages: it crashes an offline Piston.)"""
        resp = self._http("GET", "/runtimes", timeout=(self.connect_timeout_s, self.connect_timeout_s * 2), body=None)
        assert resp is not None  # only a should_stop() can make _http return None
        if resp.status_code != 200:
            self._raise_for_status(resp)
        data = _json_or_none(resp)
        if not isinstance(data, list):
            raise PistonError("Piston answered /runtimes with something that is not a list")
        return data

    def has_python(self) -> bool:
        return any(rt.get("language") == "python" or "python" in (rt.get("aliases") or []) for rt in self.runtimes())

    # ---- run ------------------------------------------------------------------------------------

    def resolve(self, transport: Transport) -> Transport:
        """The concrete transport a run asked as ``transport`` will use (AUTO: WS until it proved unsupported)."""
        transport = Transport(transport)
        if transport is Transport.AUTO:
            return self._auto_choice or Transport.WS
        return transport

    def prefer_execute(self) -> None:
        """Remember that this Piston has no WebSocket endpoint: AUTO resolves to EXECUTE from now on."""
        self._auto_choice = Transport.EXECUTE

    def run(
        self,
        files: list[dict[str, Any]],
        limits: RunLimits,
        *,
        transport: Transport,
        args: list[str] | None = None,
        stdin: str = "",
        on_stdout: StdoutCallback | None = None,
        on_stderr: StderrCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> RunResult:
        transport = Transport(transport)
        chosen = (self._auto_choice or Transport.WS) if transport is Transport.AUTO else transport
        log.info(
            "piston_run_start",
            transport=str(chosen),
            requested=str(transport),
            files=len(files),
            code_chars=sum(len(str(f.get("content", ""))) for f in files),
            stdin_chars=len(stdin),
            run_timeout_ms=limits.run_timeout_ms,
            run_cpu_time_ms=limits.run_cpu_time_ms,
            run_memory_limit=limits.run_memory_limit,
        )
        if chosen is Transport.WS:
            try:
                result = self._run_ws(files, limits, args, stdin, on_stdout, on_stderr, should_stop)
            except PistonUnsupported as err:
                if transport is not Transport.AUTO:
                    raise
                log.warning("piston_ws_unsupported_fallback", error=str(err))
                self._auto_choice = Transport.EXECUTE
                result = self._run_execute(files, limits, args, stdin, on_stdout, on_stderr, should_stop)
        else:
            result = self._run_execute(files, limits, args, stdin, on_stdout, on_stderr, should_stop)
        log.info(
            "piston_run_end",
            transport=str(result.transport),
            status=str(result.status),
            code=result.code,
            signal=result.signal,
            wall_ms=round(result.wall_ms, 1),
            started=result.started,
        )
        return result

    def _init_body(self, files: list[dict[str, Any]], limits: RunLimits, args: list[str] | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "language": self.language,
            "version": self.version,
            "files": files,
            "args": list(args or []),
            "run_timeout": limits.run_timeout_ms,
        }
        # Optional limits only when set: older servers refuse nothing, but unset means "server default".
        if limits.run_cpu_time_ms is not None:
            body["run_cpu_time"] = limits.run_cpu_time_ms
        if limits.run_memory_limit is not None:
            body["run_memory_limit"] = limits.run_memory_limit
        return body

    # ---- WebSocket ------------------------------------------------------------------------------

    def _open_ws(self) -> ClientConnection:
        try:
            # No keepalive pings: a slow on_stdout stalls reading, and a missed pong would then kill a healthy
            # run; the deadlines below bound a dead server instead.
            return connect(
                self.ws_url,
                open_timeout=self.connect_timeout_s,
                ping_interval=None,
                close_timeout=WS_CLOSE_TIMEOUT_S,
                max_size=WS_MAX_FRAME_BYTES,
            )
        except InvalidStatus as err:
            status = err.response.status_code
            if status in (429, 500, 502, 503, 504):
                raise PistonTransient(f"WebSocket handshake answered HTTP {status}") from err
            raise PistonUnsupported(f"WebSocket handshake answered HTTP {status}") from err
        except InvalidMessage as err:
            if isinstance(err.__cause__, EOFError | OSError):
                raise PistonTransient(f"connection dropped during the WebSocket handshake: {err.__cause__!r}") from err
            raise PistonUnsupported(f"not a WebSocket server: {err}") from err
        except InvalidHandshake as err:
            raise PistonUnsupported(f"WebSocket handshake refused: {err}") from err
        except InvalidURI as err:
            raise PistonError(f"bad WebSocket URL {self.ws_url}: {err}") from err
        except (OSError, TimeoutError) as err:  # refused, reset, DNS, open timeout
            raise PistonTransient(f"cannot connect to {self.ws_url}: {err!r}") from err

    def _run_ws(
        self,
        files: list[dict[str, Any]],
        limits: RunLimits,
        args: list[str] | None,
        stdin: str,
        on_stdout: StdoutCallback | None,
        on_stderr: StderrCallback | None,
        should_stop: StopCheck | None,
    ) -> RunResult:
        t0 = time.monotonic()
        ws = self._open_ws()
        with ws:
            try:
                ws.send(json.dumps({"type": "init", **self._init_body(files, limits, args)}))
            except ConnectionClosed as err:
                raise PistonTransient(f"WebSocket closed before init was sent: {err}") from err
            run = _WsRun(self, ws, limits, t0, on_stdout, on_stderr, should_stop)
            run.writer.write(stdin)  # Piston ignores stdin in init: it goes out as data after `stage: run`
            return run.loop()

    # ---- /execute --------------------------------------------------------------------------------

    def _run_execute(
        self,
        files: list[dict[str, Any]],
        limits: RunLimits,
        args: list[str] | None,
        stdin: str,
        on_stdout: StdoutCallback | None,
        on_stderr: StderrCallback | None,
        should_stop: StopCheck | None,
    ) -> RunResult:
        body = {**self._init_body(files, limits, args), "stdin": stdin}
        # Piston queues jobs without a timeout, so the read timeout is the only bound on a busy server.
        read_s = limits.run_timeout_ms / 1000 + self.execute_margin_s if limits.run_timeout_ms > 0 else None
        t0 = time.monotonic()
        resp = self._http("POST", "/execute", timeout=(self.connect_timeout_s, read_s), body=body, should_stop=should_stop)
        elapsed_ms = (time.monotonic() - t0) * 1000
        if resp is None:
            return RunResult(
                transport=Transport.EXECUTE,
                status=RunStatus.STOPPED,
                code=None,
                signal=None,
                message="Stopped by the caller; the run goes on server-side until its limits",
                stdout="",
                stderr_tail="",
                wall_ms=elapsed_ms,
                cpu_ms=None,
                memory_bytes=None,
                started=True,  # the request was sent: the program may be running
            )
        if resp.status_code != 200:
            self._raise_for_status(resp)
        data = _json_or_none(resp)
        stage = None
        if isinstance(data, dict):
            # Piston answers with only `compile` when compilation failed.
            stage = data.get("run") if isinstance(data.get("run"), dict) else data.get("compile")
        if not isinstance(stage, dict):
            raise PistonError("Piston answered /execute with 200 but no run object")
        return _execute_result(self, stage, limits, elapsed_ms, on_stdout, on_stderr)

    def _http(
        self,
        method: str,
        path: str,
        *,
        timeout: tuple[float, float | None],
        body: dict[str, Any] | None,
        should_stop: StopCheck | None = None,
    ) -> requests.Response | None:
        """One HTTP call with errors mapped; None only when should_stop() turned True while waiting."""
        url = self.api + path

        def call() -> requests.Response:
            return requests.request(method, url, json=body, timeout=timeout)

        try:
            if should_stop is None:
                return call()
            if should_stop():
                return None
            return _call_stoppable(call, should_stop)
        except requests.ConnectTimeout as err:
            raise PistonTransient(f"cannot connect to {url}: connect timeout") from err
        except requests.ReadTimeout as err:
            raise PistonTransient(f"no answer from {url} within {timeout[1]} s (Piston queues jobs)", started=True) from err
        except requests.ConnectionError as err:
            never = _never_connected(err)
            what = "cannot connect to" if never else "connection dropped by"
            raise PistonTransient(f"{what} {url}: {type(err).__name__}", started=not never) from err
        except requests.RequestException as err:
            raise PistonTransient(f"{method} {url} failed: {type(err).__name__}", started=True) from err

    def _raise_for_status(self, resp: requests.Response) -> None:
        status = resp.status_code
        data = _json_or_none(resp)
        message = data.get("message") if isinstance(data, dict) and isinstance(data.get("message"), str) else None
        if status == 400:
            if message:
                raise PistonRefused(message)
            stack = data.get("stack") if isinstance(data, dict) else None
            if isinstance(stack, str) and stack.strip():
                # Malformed JSON or a body over 100 kB: the error name is the first word of the stack.
                raise PistonRefused(f"Piston rejected the request body: {stack.strip().split(':', 1)[0].split()[0]}")
            raise PistonRefused("Piston rejected the request body (HTTP 400 without a message, e.g. stdin not a string)")
        if status in (429, 500, 502, 503, 504):
            raise PistonTransient(f"Piston answered HTTP {status}" + (f": {message}" if message else ""))
        if status in (404, 405, 413, 415):
            raise PistonRefused(f"Piston answered HTTP {status}" + (f": {message}" if message else ""))
        raise PistonError(f"Piston answered HTTP {status}" + (f": {message}" if message else ""))


def _execute_result(
    client: PistonClient,
    run: dict[str, Any],
    limits: RunLimits,
    elapsed_ms: float,
    on_stdout: StdoutCallback | None,
    on_stderr: StderrCallback | None,
) -> RunResult:
    code, signal = run.get("code"), run.get("signal")
    wall = run.get("wall_time")
    wall_ms = float(wall) if isinstance(wall, int | float) else elapsed_ms
    if "status" in run:  # servers from 2024-09 on
        raw_status = run.get("status")
        message = run.get("message")
        if raw_status is None:
            status = RunStatus.OK
        elif raw_status in ("RE", "SG", "TO", "OL", "EL", "XX"):
            status = RunStatus(raw_status)
        else:
            status, message = RunStatus.XX, message or f"unknown Piston status {raw_status!r}"
    else:  # older servers: only stdout, stderr, output, code, signal
        status, message = derive_status(code, signal, wall_ms, limits)
    stdout = run.get("stdout") or ""
    stderr = run.get("stderr") or ""
    # One code path for callers: the whole output arrives as a single chunk, with a writer that refuses stdin.
    if on_stdout is not None and stdout:
        on_stdout(stdout, _NoStdin())
    if on_stderr is not None and stderr:
        on_stderr(stderr)
    cpu, memory = run.get("cpu_time"), run.get("memory")
    return RunResult(
        transport=Transport.EXECUTE,
        status=status,
        code=code,
        signal=signal,
        message=message,
        stdout=stdout,
        stderr_tail=_tail(stderr, client.stderr_tail_chars),
        wall_ms=wall_ms,
        cpu_ms=float(cpu) if isinstance(cpu, int | float) else None,
        memory_bytes=int(memory) if isinstance(memory, int | float) else None,
        started=True,
    )


def _call_stoppable(call: Callable[[], requests.Response], should_stop: StopCheck) -> requests.Response | None:
    """Run a blocking request in a thread so should_stop() keeps being polled; abandon it when asked."""
    responses: list[requests.Response] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def work() -> None:
        try:
            responses.append(call())
        except BaseException as err:  # handed back to the caller's thread
            errors.append(err)
        finally:
            done.set()

    # Daemon: an abandoned request ends at its own read timeout and must not hold the process open.
    threading.Thread(target=work, name="piston-execute", daemon=True).start()
    while not done.wait(POLL_S):
        if should_stop():
            return None
    if errors:
        raise errors[0]
    return responses[0]


class _WsRun:
    """State of one WebSocket run: frames in, callbacks out, until exit, cap, stop, error or deadline."""

    def __init__(
        self,
        client: PistonClient,
        ws: ClientConnection,
        limits: RunLimits,
        t0: float,
        on_stdout: StdoutCallback | None,
        on_stderr: StderrCallback | None,
        should_stop: StopCheck | None,
    ) -> None:
        self.client = client
        self.ws = ws
        self.limits = limits
        self.t0 = t0
        self.on_stdout = on_stdout
        self.on_stderr = on_stderr
        self.should_stop = should_stop
        self.writer = _WsStdin(ws)
        self.started = False
        self.run_t0: float | None = None
        self.exit_t: float | None = None
        self.exit: tuple[int | None, str | None] | None = None
        self.error: str | None = None
        self.chars = 0
        self.stderr_tail = ""
        self.callback_s = 0.0  # time spent in callbacks does not count against the server's deadline

    def deadline(self) -> float | None:
        margin = self.client.execute_margin_s
        if self.exit_t is not None:
            return self.exit_t + EXIT_GRACE_S + self.callback_s
        if self.run_t0 is None:  # queue wait allowance: Piston queues jobs with no timeout
            return self.t0 + self.client.connect_timeout_s + margin + self.callback_s
        if self.limits.run_timeout_ms <= 0:  # 0 = "no limit" to Piston
            return None
        return self.run_t0 + self.limits.run_timeout_ms / 1000 + margin + self.callback_s

    def loop(self) -> RunResult:
        while True:
            if self.exit is None and self.should_stop is not None and self.should_stop():
                return self.abandon(RunStatus.STOPPED, "Stopped by the caller; the run goes on server-side until its limits")
            deadline = self.deadline()
            wait = POLL_S if deadline is None else min(POLL_S, max(0.0, deadline - time.monotonic()))
            try:
                raw = self.ws.recv(timeout=wait)
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    if self.exit is not None:  # exit seen, the 4999 close never came: the result stands
                        return self.finish()
                    raise PistonTransient(
                        "Piston did not answer in time on the WebSocket" + (" after the run started" if self.started else ""),
                        started=self.started,
                    ) from None
                continue
            except ConnectionClosed as err:
                return self.closed(err)
            result = self.frame(raw)
            if result is not None:
                return result

    def frame(self, raw: str | bytes) -> RunResult | None:
        try:
            msg = json.loads(raw)
        except ValueError as err:
            raise PistonError("Piston sent a WebSocket frame that is not JSON") from err
        if not isinstance(msg, dict):
            raise PistonError("Piston sent a WebSocket frame that is not a JSON object")
        kind = msg.get("type")
        if kind == "runtime":
            log.debug("piston_ws_runtime", language=msg.get("language"), version=msg.get("version"))
        elif kind == "stage" and msg.get("stage") == "run":
            self.started = True
            self.run_t0 = time.monotonic()
            self.writer.open()
        elif kind == "data":
            return self.data(msg.get("stream"), msg.get("data"))
        elif kind == "exit":
            code, signal = msg.get("code"), msg.get("signal")
            if msg.get("stage", "run") == "run" or code or signal:  # a failed compile ends the job too
                self.exit = (code, signal)
                self.exit_t = time.monotonic()
        elif kind == "error":
            self.error = str(msg.get("message") or "")
        return None

    def data(self, stream: Any, chunk: Any) -> RunResult | None:
        if not isinstance(chunk, str) or not chunk:
            return None
        room = self.client.max_output_chars - self.chars
        capped = len(chunk) > room
        if capped:
            # Deliver up to the cap (one pipe read can carry 64 kB, dropping it whole could deliver nothing).
            chunk = chunk[: max(0, room)]
        self.chars += len(chunk)
        t = time.monotonic()
        if chunk and stream == "stdout":
            if self.on_stdout is not None:
                self.on_stdout(chunk, self.writer)
        elif chunk and stream == "stderr":
            self.stderr_tail = _tail(self.stderr_tail + chunk, self.client.stderr_tail_chars)
            if self.on_stderr is not None:
                self.on_stderr(chunk)
        self.callback_s += time.monotonic() - t
        if capped:
            return self.abandon(
                RunStatus.CAPPED,
                f"Output exceeded {self.client.max_output_chars} characters; stopped reading "
                "(the run goes on server-side until its limits)",
            )
        return None

    def abandon(self, status: RunStatus, message: str) -> RunResult:
        """Stop reading: ask for a kill (Piston ignores it, a better server may not) and close."""
        with contextlib.suppress(ConnectionClosed):
            self.ws.send(json.dumps({"type": "signal", "signal": "SIGKILL"}))
        self.ws.close_timeout = ABANDON_CLOSE_TIMEOUT_S
        self.ws.close()
        log.info("piston_ws_abandoned", status=str(status), started=self.started, output_chars=self.chars)
        return self.result(status, None, None, message)

    def closed(self, err: ConnectionClosed) -> RunResult:
        close_code = err.rcvd.code if err.rcvd is not None else 1006
        reason = err.rcvd.reason if err.rcvd is not None else ""
        if self.exit is not None:
            return self.finish()
        if self.error is not None or close_code == 4002:
            message = self.error or reason or "Piston reported an error"
            if self.started:  # failed after the program started: report it as a sandbox error, not a refusal
                return self.result(RunStatus.XX, None, None, message)
            raise PistonRefused(message)
        if close_code in (4000, 4003, 4004, 4005):  # protocol misuse on our side: retrying repeats it
            raise PistonError(f"Piston closed the WebSocket: {close_code} {reason}".strip())
        raise PistonTransient(
            f"WebSocket closed {'mid-run' if self.started else 'before the run started'} ({close_code} {reason})".strip(),
            started=self.started,
        )

    def finish(self) -> RunResult:
        assert self.exit is not None
        code, signal = self.exit
        status, message = derive_status(code, signal, self.wall_ms(), self.limits)
        return self.result(status, code, signal, message)

    def wall_ms(self) -> float:
        end = self.exit_t if self.exit_t is not None else time.monotonic()
        return (end - (self.run_t0 if self.run_t0 is not None else self.t0)) * 1000

    def result(self, status: RunStatus, code: int | None, signal: str | None, message: str | None) -> RunResult:
        return RunResult(
            transport=Transport.WS,
            status=status,
            code=code,
            signal=signal,
            message=message,
            stdout="",
            stderr_tail=self.stderr_tail,
            wall_ms=self.wall_ms(),
            cpu_ms=None,
            memory_bytes=None,
            started=self.started,
        )


def retrying(attempts: int, base_s: float, max_s: float) -> tenacity.Retrying:
    """Retry PistonTransient only, exponential backoff with full jitter, at most `attempts` tries, then reraise."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(PistonTransient),
        wait=tenacity.wait_random_exponential(multiplier=base_s, max=max_s),
        stop=tenacity.stop_after_attempt(max(1, attempts)),
        reraise=True,
        before_sleep=_log_retry,
    )


def _log_retry(state: tenacity.RetryCallState) -> None:
    err = state.outcome.exception() if state.outcome is not None else None
    sleep = state.next_action.sleep if state.next_action is not None else None
    log.warning("piston_retry", attempt=state.attempt_number, sleep_s=sleep, error=str(err))


__all__ = [
    "PistonClient",
    "PistonError",
    "PistonRefused",
    "PistonTransient",
    "PistonUnsupported",
    "RunLimits",
    "RunResult",
    "RunStatus",
    "StdinWriter",
    "Transport",
    "derive_status",
    "retrying",
]
