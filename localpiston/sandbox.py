"""Running one job's process the way isolate runs it for Piston, with what this machine allows.

Per job: a fresh box directory (`<box>/submission` is the working directory, `<box>/tmp` is HOME),
a private unprivileged uid/gid when the server is root (60001+, one per slot, reserved across
servers with a lock file), a new network namespace (no interfaces up, loopback included) when
networking is disabled and `unshare` works, isolate's rlimits (processes, open files, file size,
address space, no core dumps, unlimited stack), a wall-clock and CPU-time watchdog ticking every
100 ms like isolate's, and when the run ends every process of the box is killed (its process group,
its session, and with a private uid everything that uid owns) so nothing outlives it.

This is development/test isolation, not a security boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .jscompat import utf16_length
from .runtimes import SIGNALS

log = logging.getLogger("localpiston")

CLONE_NEWNET = 0x40000000
PR_SET_CHILD_SUBREAPER = 36
UID_BASE = 60000
UID_SLOTS = 4900  # uids 60001..64900 (65534 is nobody)
TICK = 0.1  # isolate's TIMER_INTERVAL_US
LOCK_DIR = "/tmp/localpiston-uid-locks"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUN_SCRIPT = '#!/bin/bash\n\npython3 "$@"\n'
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = resource.getpagesize() // 1024

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Isolation:
    """What the machine allowed, decided once at start-up by probing."""

    use_uid: bool
    use_netns: bool
    python: str
    version: str
    notes: list[str] = field(default_factory=list)
    memory: str = "memory: RLIMIT_AS + /proc samples"

    def summary(self) -> str:
        uid = "per-job uid" if self.use_uid else "no uid switch"
        net = "netns (no network)" if self.use_netns else "shared network"
        return f"python {self.version} ({self.python}), {uid}, {net}, {self.memory}"


@dataclass
class Limits:
    wall_ms: float  # 0 / falsy = none
    cpu_ms: float
    memory: float  # bytes, < 0 or 0 = none
    processes: int
    open_files: int
    file_size: int  # bytes as configured (isolate gets it in kB)


class MemoryCgroups:
    """Per-box cgroup (v1 memory controller) for isolate-like memory limits and peak usage.

    Used when the server can create a child of its own memory cgroup (root on a cgroup v1 host).
    Otherwise memory limits fall back to RLIMIT_AS and the peak is sampled from /proc.
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self.counter = 0

    @classmethod
    def detect(cls) -> MemoryCgroups | None:
        try:
            with open("/proc/self/cgroup") as fh:
                lines = fh.read().splitlines()
        except OSError:
            return None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                parent = os.path.join("/sys/fs/cgroup/memory", path.lstrip("/"))
                _sweep_dead(parent, _rmdir_tree)
                base = os.path.join(parent, f"localpiston-{os.getpid()}")
                try:
                    os.mkdir(base)
                except OSError:
                    return None
                return cls(base)
        return None

    def create(self, limit: float) -> str:
        self.counter += 1
        path = os.path.join(self.base, f"box-{self.counter}")
        os.mkdir(path)
        if limit and limit > 0:
            value = str(int(limit // 1000) * 1024)  # isolate --cg-mem is in kB
            with open(os.path.join(path, "memory.limit_in_bytes"), "w") as fh:
                fh.write(value)
            with contextlib.suppress(OSError), open(os.path.join(path, "memory.memsw.limit_in_bytes"), "w") as fh:
                fh.write(value)
        return path

    @staticmethod
    def peak_kb(path: str) -> int | None:
        try:
            with open(os.path.join(path, "memory.max_usage_in_bytes")) as fh:
                return int(fh.read()) // 1024
        except (OSError, ValueError):
            return None

    @staticmethod
    def remove(path: str) -> None:
        for _ in range(50):
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            for name in os.listdir(self.base):
                if name.startswith("box-"):
                    self.remove(os.path.join(self.base, name))
        self.remove(self.base)


def _limit_preexec(limits: Limits, uid: int | None, netns: bool, cgroup: str | None = None) -> Callable[[], None]:
    """Runs in the child between fork and exec (as root when uid is set)."""
    unshare = _libc.unshare
    procs_file = os.path.join(cgroup, "cgroup.procs") if cgroup else None

    def setrlimit(res: int, value: int) -> None:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(res, (value, value))

    def preexec() -> None:
        if netns and unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        if procs_file:
            with open(procs_file, "w") as fh:
                fh.write(str(os.getpid()))
        elif limits.memory and limits.memory > 0:
            setrlimit(resource.RLIMIT_AS, int(limits.memory // 1000) * 1024)
        if limits.file_size and limits.file_size // 1000 > 0:
            setrlimit(resource.RLIMIT_FSIZE, int(limits.file_size // 1000) * 1024)
        if limits.open_files > 0:
            setrlimit(resource.RLIMIT_NOFILE, limits.open_files)
        setrlimit(resource.RLIMIT_STACK, resource.RLIM_INFINITY)
        setrlimit(resource.RLIMIT_MEMLOCK, 0)
        setrlimit(resource.RLIMIT_CORE, 0)
        if uid is not None:
            if limits.processes > 0:
                setrlimit(resource.RLIMIT_NPROC, limits.processes)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return preexec


class UidSlot:
    """An exclusive uid for one box, reserved across every localpiston on the machine by flock."""

    _next = 0

    def __init__(self) -> None:
        os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
        for _ in range(UID_SLOTS):
            UidSlot._next = UidSlot._next % UID_SLOTS + 1
            uid = UID_BASE + UidSlot._next
            fd = os.open(os.path.join(LOCK_DIR, str(uid)), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self.uid = uid
            self._fd = fd
            return
        raise RuntimeError("no free sandbox uid")

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _uid_pids(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is `uid`."""
    found: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as fh:
                status = fh.read()
        except OSError:
            continue
        state = uid_line = b""
        for line in status.split(b"\n"):
            if line.startswith(b"State:"):
                state = line
            elif line.startswith(b"Uid:"):
                uid_line = line
                break
        fields = uid_line.split()
        if len(fields) > 1 and fields[1] == str(uid).encode() and b"Z" not in state.split()[1:2]:
            found.append(int(name))
    return found


def kill_uid(uid: int) -> None:
    """SIGKILL everything `uid` owns, from a helper running as that uid (kill(-1) reaches them all
    at once, so a fork bomb cannot outrun it), until /proc shows nothing of it alive."""
    for _ in range(100):
        if not _uid_pids(uid):
            return
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                for _ in range(5):
                    os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        time.sleep(0.001)
    log.warning("processes of uid %d survived repeated SIGKILL", uid)


def _read_proc_stats() -> dict[int, tuple[int, int, int]]:
    """{pid: (session, cpu ticks incl. reaped children, rss pages)} for every process."""
    stats: dict[int, tuple[int, int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        try:
            session = int(fields[3])
            ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
            stats[int(name)] = (session, ticks, int(fields[21]))
        except (IndexError, ValueError):
            continue
    return stats


def _kill_session(sid: int) -> None:
    for _ in range(50):
        victims = [pid for pid, (session, _, _) in _read_proc_stats().items() if session == sid and pid != os.getpid()]
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _ms_stat(ms: int) -> float | int | None:
    """isolate writes `%d.%03d` seconds, Piston multiplies the float by 1000 (JS double arithmetic)."""
    value = float(f"{ms // 1000}.{ms % 1000:03d}") * 1000
    return int(value) if value.is_integer() else value


@dataclass
class Box:
    id: int
    dir: str
    submission: str
    home: str
    uid: int | None
    slot: UidSlot | None


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
            preexec_fn=_limit_preexec(self.limits, self.box.uid, iso.use_netns, self.cgroup),
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


class Sandbox:
    """Owns the server's scratch directory, the child reaper and the 100 ms watchdog."""

    def __init__(self, isolation: Isolation, root: str) -> None:
        self.isolation = isolation
        self.root = root
        self.boxes_dir = os.path.join(root, "boxes")
        os.makedirs(self.boxes_dir, mode=0o755, exist_ok=True)
        self.running: set[Execution] = set()
        self._watched: dict[int, asyncio.Future[tuple[int, Any]]] = {}
        self.cgroups = MemoryCgroups.detect() if isolation.use_uid else None
        if self.cgroups:
            isolation.memory = "memory: cgroup v1 per box"
        self._box_counter = 0
        self._ticker: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of a box come back to us
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        self._ticker = loop.create_task(self._tick_forever())

    async def stop(self) -> None:
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for execution in list(self.running):
            execution.kill()
        if self.cgroups:
            self.cgroups.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def watch_pid(self, pid: int) -> asyncio.Future[tuple[int, Any]]:
        future: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        self._watched[pid] = future
        self._reap()
        return future

    def _reap(self) -> None:
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            future = self._watched.pop(pid, None)
            if future is not None and not future.done():
                future.set_result((status, rusage))

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self._reap()
            if not self.running:
                continue
            try:
                stats = _read_proc_stats()
                now = time.monotonic()
                for execution in list(self.running):
                    execution.tick(now, stats)
            except Exception:  # the watchdog must never die
                log.exception("watchdog tick failed")

    # -- boxes ------------------------------------------------------------------------------
    def create_box(self) -> Box:
        self._box_counter = self._box_counter % 999 + 1
        slot = UidSlot() if self.isolation.use_uid else None
        uid = slot.uid if slot else None
        try:
            if uid is not None:
                kill_uid(uid)  # leftovers of a crashed server that held this uid
            box_dir = tempfile.mkdtemp(prefix=f"{self._box_counter}-", dir=self.boxes_dir)
            os.chmod(box_dir, 0o755)
            if uid is not None:
                # Only this job's uid may enter its box: the submission holds the agent's secrets
                # (hub.py's embedded context), and another box's code must not read them.
                os.chown(box_dir, 0, uid)
                os.chmod(box_dir, 0o750)
            submission = os.path.join(box_dir, "submission")
            os.mkdir(submission, 0o755)
            home = os.path.join(box_dir, "tmp")
            os.mkdir(home, 0o700)
            if uid is not None:
                os.chown(home, uid, uid)
        except BaseException:
            if slot:
                slot.release()
            raise
        return Box(id=self._box_counter, dir=box_dir, submission=submission, home=home, uid=uid, slot=slot)

    def kill_box(self, box: Box, pid: int) -> None:
        if pid > 0:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        if box.uid is not None:
            kill_uid(box.uid)
        elif pid > 0:
            _kill_session(pid)

    def cleanup_box(self, box: Box) -> None:
        if box.uid is not None:
            kill_uid(box.uid)
        shutil.rmtree(box.dir, ignore_errors=True)
        if box.slot:
            box.slot.release()

    def env_for(self, box: Box, pkgdir: str, language: str) -> dict[str, str]:
        return {
            "PATH": f"{pkgdir}/bin:{BASE_PATH}",
            "HOME": box.home,
            "TMPDIR": box.home,
            "PISTON_LANGUAGE": language,
            "LIBC_FATAL_STDERR_": "1",
        }


# -- start-up probing -----------------------------------------------------------------------


def _rmdir_tree(path: str) -> None:
    """rmdir a stale cgroup and its (empty) children, one attempt each."""
    for name in os.listdir(path):
        if os.path.isdir(os.path.join(path, name)):
            os.rmdir(os.path.join(path, name))
    os.rmdir(path)


def _sweep_dead(parent: str, remove: Callable[[str], None]) -> None:
    """Remove `localpiston-<pid>…` entries left by servers that died without cleaning up."""
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            pid = name.split("-")[1] if name.startswith("localpiston-") else ""
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                with contextlib.suppress(OSError):
                    remove(os.path.join(parent, name))


def make_root() -> str:
    _sweep_dead(tempfile.gettempdir(), lambda stale: shutil.rmtree(stale, ignore_errors=True))
    root = tempfile.mkdtemp(prefix=f"localpiston-{os.getpid()}-")
    os.chmod(root, 0o755)
    return root


def install_package(root: str, version: str, python: str) -> str:
    """Lay out the python package like Piston's: <pkgdir>/run and <pkgdir>/bin/python3."""
    pkgdir = os.path.join(root, "packages", "python", version)
    os.makedirs(os.path.join(pkgdir, "bin"), mode=0o755, exist_ok=True)
    for d in (os.path.join(root, "packages"), os.path.join(root, "packages", "python")):
        os.chmod(d, 0o755)
    link = os.path.join(pkgdir, "bin", "python3")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(python, link)
    with open(os.path.join(pkgdir, "run"), "w") as fh:
        fh.write(RUN_SCRIPT)
    os.chmod(os.path.join(pkgdir, "run"), 0o755)
    return pkgdir


def _candidates(explicit: str | None) -> list[str]:
    if explicit:
        return [explicit]
    found: list[str] = []
    base = getattr(sys, "_base_executable", None) or sys.executable
    for candidate in (os.path.realpath(base), shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")):
        if candidate and os.path.realpath(candidate) not in found:
            found.append(os.path.realpath(candidate))
    return found


def _probe(python: str, root: str, uid: int | None, netns: bool) -> str | None:
    limits = Limits(wall_ms=0, cpu_ms=0, memory=-1, processes=64, open_files=2048, file_size=10_000_000)
    code = "import sys, socket; print('%d.%d.%d' % sys.version_info[:3])"
    try:
        done = subprocess.run(
            [python, "-I", "-c", code],
            capture_output=True,
            cwd=root,
            env={"PATH": BASE_PATH, "HOME": root},
            preexec_fn=_limit_preexec(limits, uid, netns),
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    version = done.stdout.decode().strip()
    return version if done.returncode == 0 and version.count(".") == 2 else None


def probe_isolation(explicit_python: str | None, disable_networking: bool, root: str) -> Isolation:
    """Pick the strongest isolation this machine supports, and an interpreter that works under it."""
    is_root = os.geteuid() == 0
    notes: list[str] = []
    candidates = _candidates(explicit_python)
    uid_options = [True, False] if is_root else [False]
    net_options = [True, False] if disable_networking else [False]
    for use_uid in uid_options:
        for use_netns in net_options:
            slot = UidSlot() if use_uid else None
            try:
                for python in candidates:
                    version = _probe(python, root, slot.uid if slot else None, use_netns)
                    if version:
                        if not is_root:
                            notes.append("not running as root: jobs run as the server's own user, no RLIMIT_NPROC")
                        elif not use_uid:
                            notes.append("no interpreter usable by an unprivileged uid: jobs run as root")
                        if disable_networking and not use_netns:
                            notes.append("unshare(CLONE_NEWNET) unavailable: sandboxed code keeps network access")
                        if python != candidates[0]:
                            notes.append(f"{candidates[0]} is not usable by the sandbox user, using {python}")
                        return Isolation(use_uid, use_netns, python, version, notes)
            finally:
                if slot:
                    slot.release()
    raise RuntimeError(f"no usable python interpreter among {candidates}")
