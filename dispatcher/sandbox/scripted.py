"""A sandbox that runs no code: it plays a script, in process. For tests of the runner, and the bench.

As PgQueuer's in-memory adapter lets its worker be tested without Postgres, this adapter lets the runner
be tested (on a real database) without Piston: it implements the same port and plays, at the level of
the hub's line protocol, what an agent would do. A script is a function of the ``Box`` (the run's context
as the hub would read it, its transport, its files) that returns the steps to play: a list, or a
generator that gets each call's reply back (``reply = yield Call("call_llm", {...})``) and may run test
code between steps (it runs in the run's thread, as the agent's output is relayed).

Steps: ``Hub`` (one protocol line, stamped with the run's nonce), ``Out`` / ``Err`` (plain stdout /
stderr), ``Call`` (a call line; on the WebSocket the script waits for the reply on stdin), ``Sleep``,
``Hang`` (on until stopped or out of time), ``Exit`` (the end, any status), ``Fail`` (the sandbox
fails: raise a port error, e.g. ``SandboxTransient``). A script that runs out of steps exits 0.

The transports behave as Piston's: on ``ws`` stdout is relayed as each step plays and stdin is open; on
``execute`` the output comes in one chunk at the end, with a writer that refuses stdin.
``websocket=False`` refuses the WebSocket as a proxy that drops upgrades does (``SandboxUnsupported``).
A script still playing at the request's time limit ends TO; one whose stop check turns true, STOPPED.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from dispatcher.protocol import MARKER
from dispatcher.sandbox.port import (
    File,
    NoStdin,
    RunLimits,
    RunResult,
    RunStatus,
    SandboxError,
    SandboxRequest,
    SandboxUnsupported,
    Transport,
)
from hubpy.hub._box import CONTEXT_NAME

POLL_S = 0.02  # the stop check and stdin are looked at this often while a step waits
STDERR_TAIL_CHARS = 4000


@dataclass(frozen=True)
class Hub:
    payload: dict[str, Any]  # e.g. {"type": "message", "content": "hi"}


@dataclass(frozen=True)
class Out:
    text: str


@dataclass(frozen=True)
class Err:
    text: str


@dataclass(frozen=True)
class Call:
    method: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Hang:
    pass


@dataclass(frozen=True)
class Exit:
    code: int | None = 0
    signal: str | None = None
    status: RunStatus | None = None  # None: OK for code 0, RE otherwise, SG with a signal
    message: str | None = None


@dataclass(frozen=True)
class Fail:
    error: SandboxError


Step: TypeAlias = Hub | Out | Err | Call | Sleep | Hang | Exit | Fail
Reply: TypeAlias = dict[str, Any] | None  # a call's reply line as JSON (None: no reply, on /execute)
Steps: TypeAlias = Iterable[Step] | Generator[Step, Reply, None]


@dataclass
class Box:
    """A run as the script sees it."""

    context: dict[str, Any]  # as hub._bootstrap() would read it
    transport: Transport
    files: Sequence[File]
    limits: RunLimits
    number: int  # 1 for the sandbox's first run, 2 for the next...
    replies: list[dict[str, Any]] = field(default_factory=list)  # every reply line the run got, in order
    result: RunResult | None = None

    @property
    def agent_id(self) -> str:
        return str(self.context["agent"]["id"])


Script: TypeAlias = Callable[[Box], Steps]


class ScriptedSandbox:
    """The port's in-process adapter. ``runs``: every run it played, in order (thread-safe; with
    ``record=False`` none are kept, for long runs such as the bench's)."""

    def __init__(self, script: Script, *, websocket: bool = True, record: bool = True) -> None:
        self.script = script
        self.websocket = websocket
        self.record = record
        self.runs: list[Box] = []
        self._count = 0
        self._lock = threading.Lock()

    def run(self, request: SandboxRequest) -> RunResult:
        if request.transport is Transport.WS and not self.websocket:
            raise SandboxUnsupported("WebSocket handshake answered HTTP 404 (scripted: no WebSocket)")
        if request.transport not in (Transport.WS, Transport.EXECUTE):
            raise ValueError(f"a sandbox runs ws or execute, not {request.transport}")
        context: dict[str, Any] = next(
            (json.loads(f["content"]) for f in request.files if f.get("name") == CONTEXT_NAME), {})
        with self._lock:
            self._count += 1
            box = Box(context=context, transport=request.transport, files=request.files, limits=request.limits,
                      number=self._count)
            if self.record:
                self.runs.append(box)
        box.result = _Play(box, request).play(self.script(box))
        return box.result


class _Stdin:
    """The program's stdin on the WebSocket: every reply line is kept in ``box.replies``, and queued."""

    def __init__(self, box: Box) -> None:
        self.box = box
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._partial = ""

    def write(self, text: str) -> None:
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            try:
                reply = json.loads(line)
            except ValueError:
                continue  # the hub ignores lines that are not JSON
            if isinstance(reply, dict):
                self.box.replies.append(reply)
                self.replies.put(reply)


class _Play:
    def __init__(self, box: Box, request: SandboxRequest) -> None:
        self.box = box
        self.request = request
        self.ws = request.transport is Transport.WS
        self.stdin = _Stdin(box)
        self.stdout: list[str] = []  # execute: delivered at the end
        self.stderr = ""
        self.t0 = time.monotonic()
        limit_ms = request.limits.run_timeout_ms
        self.deadline = self.t0 + limit_ms / 1000 if limit_ms > 0 else None
        self.ids = itertools.count(1)

    def play(self, steps: Steps) -> RunResult:
        generator = steps if isinstance(steps, Generator) else None
        iterator = iter(steps)
        reply: Reply = None
        while True:
            if self._stopped():
                return self._end(RunStatus.STOPPED, None, None, "Stopped by the caller")
            if self._out_of_time():
                return self._end(RunStatus.TO, None, "SIGKILL", "Time limit exceeded")
            try:
                step = generator.send(reply) if generator is not None else next(iterator)
            except StopIteration:
                return self._exit(Exit())
            reply = None
            match step:
                case Hub(payload=payload):
                    body = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
                    self._out(f"{MARKER}{self.box.context.get('nonce', '')}:{body}\n")
                case Out(text=text):
                    self._out(text)
                case Err(text=text):
                    self._err(text)
                case Call(method=method, params=params):
                    call_id = next(self.ids)
                    self._out(f"{MARKER}{self.box.context.get('nonce', '')}:"
                              + json.dumps({"type": "call", "id": call_id, "method": method, "params": params}) + "\n")
                    if self.ws:
                        reply = self._await_reply(call_id)
                        if reply is None:  # stopped or out of time: the loop's checks end the run
                            continue
                case Sleep(seconds=seconds):
                    self._wait(time.monotonic() + seconds)
                case Hang():
                    self._wait(None)
                case Exit():
                    return self._exit(step)
                case Fail(error=error):
                    raise error

    def _stopped(self) -> bool:
        return self.request.should_stop is not None and self.request.should_stop()

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _wait(self, until: float | None) -> None:
        """Until ``until`` (None: for ever), a stop or the time limit, whichever comes first."""
        while not self._stopped() and not self._out_of_time():
            if until is not None and time.monotonic() >= until:
                return
            time.sleep(POLL_S)

    def _await_reply(self, call_id: int) -> Reply:
        while not self._stopped() and not self._out_of_time():
            try:
                reply = self.stdin.replies.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if reply.get("id") == call_id:
                return reply
        return None

    def _out(self, text: str) -> None:
        if not self.ws:
            self.stdout.append(text)
        elif self.request.on_stdout is not None:
            self.request.on_stdout(text, self.stdin)

    def _err(self, text: str) -> None:
        self.stderr = (self.stderr + text)[-STDERR_TAIL_CHARS:]
        if self.ws and self.request.on_stderr is not None:
            self.request.on_stderr(text)

    def _exit(self, step: Exit) -> RunResult:
        status = step.status
        if status is None:
            status = RunStatus.SG if step.signal else RunStatus.RE if step.code else RunStatus.OK
        message = step.message or (f"Exited with error status {step.code}" if status is RunStatus.RE else None)
        if not self.ws:  # the batch transport: everything at the end, and no stdin
            stdout = "".join(self.stdout)
            if stdout and self.request.on_stdout is not None:
                self.request.on_stdout(stdout, NoStdin())
            if self.stderr and self.request.on_stderr is not None:
                self.request.on_stderr(self.stderr)
        return self._end(status, step.code, step.signal, message)

    def _end(self, status: RunStatus, code: int | None, signal: str | None, message: str | None) -> RunResult:
        return RunResult(
            transport=self.request.transport,
            status=status,
            code=code,
            signal=signal,
            message=message,
            stdout="" if self.ws else "".join(self.stdout),
            stderr_tail=self.stderr,
            wall_ms=(time.monotonic() - self.t0) * 1000,
            cpu_ms=None,
            memory_bytes=None,
            started=True,
        )
