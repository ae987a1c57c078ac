"""The sandbox port: what a run needs of a sandbox, and nothing of how the sandbox is reached.

One call, ``Sandbox.run(request) -> RunResult``. The request is one value holding everything about a
run: the box's files, its limits, the transport, stdin, the hooks that relay its output while it
runs, the stop check, and the files to go on with should the WebSocket turn out to be missing. Adapters:
Piston (``dispatcher/sandbox/piston/``) and a scripted in-process sandbox for tests
(``dispatcher/sandbox/scripted.py``). ``auto`` is resolved by one rule for every adapter
(``dispatcher/sandbox/auto.py``): adapters themselves only ever see ``ws`` or ``execute``.

A run that the sandbox could not carry out raises one of three errors: ``SandboxTransient`` (worth
retrying; its ``SandboxFailover`` says another server of a pool takes the run at once), ``SandboxRefused``
(the request itself is wrong) and ``SandboxUnsupported`` (the sandbox has no WebSocket transport).
Everything else, the agent's own failures included, is a ``RunResult``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

STDIN_ON_EXECUTE = "stdin is only available on the WebSocket transport"


class Transport(StrEnum):
    WS = "ws"            # streaming: output relayed as it comes, stdin open for replies
    EXECUTE = "execute"  # batch: the whole output at the end, no stdin after the start
    AUTO = "auto"        # requests only: WS until the sandbox shows it has none, then EXECUTE


class RunStatus(StrEnum):
    OK = "OK"
    RE = "RE"  # non-zero exit
    SG = "SG"  # killed by a signal
    TO = "TO"  # time limit
    OL = "OL"  # stdout over the sandbox's output cap (/execute only)
    EL = "EL"  # stderr over the sandbox's output cap (/execute only)
    XX = "XX"  # sandbox error
    CAPPED = "CAPPED"  # our own client-side output cap hit on the WebSocket: we stopped reading
    STOPPED = "STOPPED"  # the stop check turned true: we stopped reading


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
    message: str | None  # the sandbox's message, or ours e.g. "Time limit exceeded"
    stdout: str  # execute: the whole stdout as returned; ws: "" (relayed through on_stdout)
    stderr_tail: str  # the last characters of stderr
    wall_ms: float
    cpu_ms: float | None
    memory_bytes: int | None
    started: bool  # whether the program started (ws: stage run seen; execute: a response came back)
    limits: RunLimits | None = None  # what the run really got, when the sandbox lowered what was asked
    server: str | None = None  # which sandbox server ran it (a pool of Piston servers names it)


class SandboxError(Exception):
    """Base of every error a sandbox raises."""


class SandboxTransient(SandboxError):
    """Worth retrying: the sandbox was unreachable, overloaded, or dropped the connection."""

    def __init__(self, message: str, *, started: bool = False) -> None:
        super().__init__(message)
        self.started = started  # True when the program may already have run (side effects possible)


class SandboxFailover(SandboxTransient):
    """One server of a pool failed transiently and another is ready: run the request again at once, from the
    start and with fresh hooks, without counting it as a retry (dispatcher/sandbox/pool.py)."""

    def __init__(self, message: str, *, started: bool, next_server: str) -> None:
        super().__init__(message, started=started)
        self.next_server = next_server


class SandboxRefused(SandboxError):
    """The sandbox refused the request itself; retrying the same request cannot succeed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SandboxUnsupported(SandboxError):
    """The sandbox (or a proxy in front of it) has no WebSocket transport; nothing ran."""


class StdinWriter(Protocol):
    def write(self, text: str) -> None: ...


class NoStdin:
    """The writer handed to on_stdout on the batch transport: there is no live stdin there."""

    def write(self, text: str) -> None:
        raise SandboxError(STDIN_ON_EXECUTE)


File = dict[str, str]  # {"name", "content", "encoding"?}: Piston's files field, the first file runs
StdoutHook = Callable[[str, StdinWriter], None]
StderrHook = Callable[[str], None]
StopCheck = Callable[[], bool]
# Registers a listener called (in any thread) when the run is stopped; returns its unsubscribe (RunControl.on_stop).
OnStop = Callable[[Callable[[], None]], Callable[[], None]]
Rebuild = Callable[[Transport], Sequence[File]]


@dataclass(frozen=True)
class SandboxRequest:
    """One run, whole. The hooks are called in the thread that called ``run``."""

    files: Sequence[File]
    limits: RunLimits
    transport: Transport = Transport.WS  # what the files are for; auto: resolved by AutoTransport
    args: Sequence[str] = ()
    stdin: str = ""  # ws: sent once the program runs; execute: the request's stdin
    on_stdout: StdoutHook | None = None  # each chunk of stdout, with the writer of the program's stdin
    on_stderr: StderrHook | None = None
    should_stop: StopCheck | None = None  # polled while the run goes on; True: stop waiting for it
    # ws: written to the program's stdin the moment the run is stopped (``on_stop``), its deadline passes or its
    # output goes over the cap: the hub's cancel line, on which the agent's process ends at once and frees its
    # slot. Empty: the program is only abandoned (it goes on until its limits). The batch transport has no stdin.
    stop_stdin: str = ""
    on_stop: OnStop | None = None
    # A ws run that may go on over /execute should the sandbox have no WebSocket (auto), with the files
    # for it (the hub inside must know). An auto request may fall back without it (same files).
    fallback: Rebuild | None = None


class Sandbox(Protocol):
    def run(self, request: SandboxRequest) -> RunResult:
        """Run the request's files on ``request.transport`` (ws or execute, never auto)."""
        ...
