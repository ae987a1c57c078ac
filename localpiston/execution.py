"""One job's process from start to result: its pipes, stdin, the wall-clock and CPU-time watchdog ticking every
100 ms like isolate's, and the result in Piston's shape (status, signal, times, memory, output caps)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .isolation import Box, Limits, MemoryCgroups, limit_preexec
from .jscompat import utf16_length
from .runtimes import SIGNALS

if TYPE_CHECKING:
    from .sandbox import Sandbox

log = logging.getLogger("localpiston")

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = resource.getpagesize() // 1024



def _ms_stat(ms: int) -> float | int | None:
    """isolate writes `%d.%03d` seconds, Piston multiplies the float by 1000 (JS double arithmetic)."""
    value = float(f"{ms // 1000}.{ms % 1000:03d}") * 1000
    return int(value) if value.is_integer() else value


@dataclass
class RunResult:
    stdout: str
    stderr: str
    output: str
    code: int | None
    signal: str | None
    message: str | None
    status: str | None
    cpu_time: float | int | None
    wall_time: float | int | None
    memory: int | None

    def as_dict(self) -> dict[str, Any]:
        # Piston spreads `{signal}` from the exit event first, then overrides it in place.
        return {
            "signal": self.signal,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "code": self.code,
            "output": self.output,
            "memory": self.memory,
            "message": self.message,
            "status": self.status,
            "cpu_time": self.cpu_time,
            "wall_time": self.wall_time,
        }


class _ReadPipe(asyncio.Protocol):
    def __init__(self, execution: Execution, stream: str) -> None:
        self.execution = execution
        self.stream = stream
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.execution._on_data(self.stream, data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Execution:
    """One sandboxed process: spawn, stream its output, watch its limits, report like isolate+Piston."""

    def __init__(
        self,
        sandbox: Sandbox,
        box: Box,
        argv: list[str],
        env: dict[str, str],
        limits: Limits,
        output_cap: int | None,
        on_output: Callable[[str, str], None] | None,
    ) -> None:
        self.sandbox = sandbox
        self.box = box
        self.argv = argv
        self.env = env
        self.limits = limits
        self.output_cap = output_cap
        self.on_output = on_output
        self.stdout = ""
        self.stderr = ""
        self.output = ""
        self.piston_status: str | None = None
        self.piston_message: str | None = None
        self.kill_reason: str | None = None  # TO_WALL | TO_CPU | ABORT
        self.exited = False
        self.polled_cpu_ticks = 0
        self.peak_rss_pages = 0
        self.pid = -1
        self._stdin: asyncio.WriteTransport | None = None
        self._pending_stdin: list[bytes] = []
        self._close_stdin_pending = False
        self._readers: list[_ReadPipe] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._exit: asyncio.Future[tuple[int, Any]] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        iso = self.sandbox.isolation
        cgroups = self.sandbox.cgroups
        self.cgroup = cgroups.create(self.limits.memory) if cgroups else None
        proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.box.submission,
            env=self.env,
            close_fds=True,
            start_new_session=True,
            preexec_fn=limit_preexec(self.limits, self.box.uid, iso.use_netns, self.cgroup),
        )
        self.start_time = time.monotonic()
        self.pid = proc.pid
        self._popen = proc
        self._exit = self.sandbox.watch_pid(proc.pid)
        self.sandbox.running.add(self)
        assert proc.stdin and proc.stdout and proc.stderr
        for stream, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            reader = _ReadPipe(self, stream)
            transport, _ = await loop.connect_read_pipe(lambda reader=reader: reader, pipe)  # type: ignore[misc]
            self._readers.append(reader)
            self._transports.append(transport)
        stdin_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, proc.stdin)
        self._stdin = stdin_transport
        self._transports.append(stdin_transport)
        for chunk in self._pending_stdin:
            self.write_stdin(chunk)
        self._pending_stdin.clear()
        if self._close_stdin_pending:
            self.close_stdin()

    def write_stdin(self, data: bytes) -> None:
        if self._stdin is None:
            self._pending_stdin.append(data)  # spawned, pipes not wired to the loop yet
        elif not self._stdin.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                self._stdin.write(data)

    def close_stdin(self) -> None:
        if self._stdin is None:
            self._close_stdin_pending = True
        else:
            self._stdin.close()

    def _on_data(self, stream: str, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        if self.on_output is not None:
            self.on_output(stream, text)
            return
        current = self.stdout if stream == "stdout" else self.stderr
        # Piston compares the JS string length so far (UTF-16 units) plus the chunk's BYTE length.
        if self.output_cap is not None and utf16_length(current) + len(data) > self.output_cap:
            self.piston_message = f"{stream} length exceeded"
            self.piston_status = "OL" if stream == "stdout" else "EL"
            if not self.exited:
                self.kill_reason = self.kill_reason or "ABORT"
                self.kill()
            return
        if stream == "stdout":
            self.stdout += text
        else:
            self.stderr += text
        self.output += text

    def kill(self) -> None:
        self.sandbox.kill_box(self.box, self.pid)

    def tick(self, now: float, stats: dict[int, tuple[int, int, int]] | None) -> None:
        """isolate's check_timeout(): wall clock first, then CPU time of the whole box."""
        if self.exited or self.kill_reason:
            return
        wall_ms = (now - self.start_time) * 1000
        if self.limits.wall_ms and self.limits.wall_ms > 0 and wall_ms > self.limits.wall_ms:
            self.kill_reason = "TO_WALL"
            self.kill()
            return
        if stats is not None:
            ticks = rss = 0
            for session, cpu, pages in stats.values():
                if session == self.pid:
                    ticks += cpu
                    rss += pages
            self.polled_cpu_ticks = max(self.polled_cpu_ticks, ticks)
            self.peak_rss_pages = max(self.peak_rss_pages, rss)
            if self.limits.cpu_ms and self.limits.cpu_ms > 0 and self.cpu_ms_polled() > self.limits.cpu_ms:
                self.kill_reason = "TO_CPU"
                self.kill()

    def cpu_ms_polled(self) -> int:
        return self.polled_cpu_ticks * 1000 // CLK_TCK

    async def wait(self) -> RunResult:
        assert self._exit is not None
        try:
            status, rusage = await self._exit
        finally:
            self.exited = True
            end = time.monotonic()
            self._popen.returncode = -1  # reaped by the sandbox, not by Popen
            self.sandbox.running.discard(self)
            self.kill()  # like isolate's box_exit: nothing of the box survives its main process
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(r.closed for r in self._readers)), 0.5)
        for transport in self._transports:
            transport.close()
        result = self._result(status, rusage, end)
        if self.cgroup:
            await asyncio.to_thread(MemoryCgroups.remove, self.cgroup)
        return result

    def _result(self, status: int, rusage: Any, end: float) -> RunResult:
        wall_ms = int((end - self.start_time) * 1000)
        cpu_ms = int(rusage.ru_utime * 1000) + int(rusage.ru_stime * 1000)
        cpu_ms = max(cpu_ms, self.cpu_ms_polled())
        # ru_maxrss of a process forked from this server counts the server's own pages (before
        # exec), so it is useless here: use the box's cgroup peak, else the /proc samples.
        cg_peak = MemoryCgroups.peak_kb(self.cgroup) if self.cgroup else None
        memory_kb = cg_peak if cg_peak is not None else self.peak_rss_pages * PAGE_KB
        code: int | None = None
        exitsig: int | None = None
        meta_status: str | None = None
        meta_message: str | None = None
        if self.kill_reason == "ABORT":
            meta_status, meta_message = "XX", "Sandbox keeper received fatal signal 6"
        elif self.kill_reason == "TO_WALL":
            meta_status, meta_message = "TO", "Time limit exceeded (wall clock)"
        elif self.kill_reason == "TO_CPU" or (self.limits.cpu_ms and self.limits.cpu_ms > 0 and cpu_ms > self.limits.cpu_ms):
            meta_status, meta_message = "TO", "Time limit exceeded"
        elif self.limits.wall_ms and self.limits.wall_ms > 0 and wall_ms > self.limits.wall_ms:
            meta_status, meta_message = "TO", "Time limit exceeded (wall clock)"
        elif os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
            if code:
                meta_status, meta_message = "RE", f"Exited with error status {code}"
        elif os.WIFSIGNALED(status):
            exitsig = os.WTERMSIG(status)
            meta_status, meta_message = "SG", f"Caught fatal signal {exitsig}"
        final_status = self.piston_status or meta_status
        return RunResult(
            stdout=self.stdout,
            stderr=self.stderr,
            output=self.output,
            code=code,
            signal="SIGKILL" if final_status in ("TO", "OL", "EL") else SIGNALS.get(exitsig or 0),
            message=self.piston_message or meta_message,
            status=final_status,
            cpu_time=_ms_stat(cpu_ms),
            wall_time=_ms_stat(wall_ms),
            memory=memory_kb * 1000,
        )
