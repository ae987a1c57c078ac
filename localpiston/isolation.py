"""How localpiston isolates one job's processes the way isolate does for Piston, with what this machine allows.

Per job: a private unprivileged uid/gid when the server is root (60001+, one per slot, reserved across
servers with a lock file), a new network namespace (no interfaces up, loopback included) when networking is
disabled and `unshare` works, isolate's rlimits (processes, open files, file size, address space, no core
dumps, unlimited stack), a cgroup v1 memory limit where there is one, and killing every process of a box (its
process group, its session, and with a private uid everything that uid owns) so nothing outlives a run.

This is development/test isolation, not a security boundary.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("localpiston")

CLONE_NEWNET = 0x40000000
PR_SET_CHILD_SUBREAPER = 36
UID_BASE = 60000
UID_SLOTS = 4900  # uids 60001..64900 (65534 is nobody)
LOCK_DIR = "/tmp/localpiston-uid-locks"
libc = ctypes.CDLL(None, use_errno=True)



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
                sweep_dead(parent, rmdir_tree)
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


def limit_preexec(limits: Limits, uid: int | None, netns: bool, cgroup: str | None = None) -> Callable[[], None]:
    """Runs in the child between fork and exec (as root when uid is set)."""
    unshare = libc.unshare
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


def read_proc_stats() -> dict[int, tuple[int, int, int]]:
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


def kill_session(sid: int) -> None:
    for _ in range(50):
        victims = [pid for pid, (session, _, _) in read_proc_stats().items() if session == sid and pid != os.getpid()]
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)



@dataclass
class Box:
    id: int
    dir: str
    submission: str
    home: str
    uid: int | None
    slot: UidSlot | None

def rmdir_tree(path: str) -> None:
    """rmdir a stale cgroup and its (empty) children, one attempt each."""
    for name in os.listdir(path):
        if os.path.isdir(os.path.join(path, name)):
            os.rmdir(os.path.join(path, name))
    os.rmdir(path)


def sweep_dead(parent: str, remove: Callable[[str], None]) -> None:
    """Remove `localpiston-<pid>…` entries left by servers that died without cleaning up."""
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            pid = name.split("-")[1] if name.startswith("localpiston-") else ""
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                with contextlib.suppress(OSError):
                    remove(os.path.join(parent, name))
