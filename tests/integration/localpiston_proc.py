"""Run `python -m localpiston` as a subprocess on a free loopback port, for tests (no pytest dependency).

with start_localpiston({"PISTON_RUN_TIMEOUT": "5000"}) as piston:
    PistonClient(piston.url)...
    piston.stop()   # e.g. to test "Piston went away"
    piston.start()  # back on the SAME port
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import requests

from localpiston import probe

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0


class LocalPistonError(RuntimeError):
    """localpiston did not come up; the message carries the tail of its output."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalPiston:
    """One localpiston server process; `start()` after `stop()` brings it back on the same port."""

    def __init__(self, env: dict[str, str] | None = None, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.env = dict(env or {})
        self.url = f"http://{host}:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        # Below a folder the sandboxes' uids can pass through, even when TMPDIR is private (mktemp -d: 0700).
        self._tmp = tempfile.mkdtemp(prefix="localpiston-test-", dir=probe.base_dir())
        os.chmod(self._tmp, 0o755)  # the sandboxes run as other uids and must reach their folders below it
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close()); a file, not a pipe: a full pipe would block the server

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> LocalPiston:
        if self.running:
            return self
        # A private TMPDIR: localpiston's work folders go there and are removed by close() even after kill().
        env = {**os.environ, "TMPDIR": self._tmp, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        # Own session: stop() can then end the sandboxed programs the server started, and only those.
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "localpiston", "--host", self.host, "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LocalPistonError(f"localpiston exited with {self._proc.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + "/api/v2/runtimes", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise LocalPistonError(f"localpiston did not answer /api/v2/runtimes within {timeout_s} s:\n{self.output()}")

    def stop(self) -> None:
        """Graceful: SIGTERM, as an operator would; localpiston may let running jobs finish first."""
        self._end(graceful=True)

    def kill(self) -> None:
        """Abrupt: SIGKILL the server and its sandboxes, every connection drops at once (a crash, or Node's
        default reaction to SIGTERM, which Piston does not handle)."""
        self._end(graceful=False)

    def _end(self, *, graceful: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if graceful and proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT_S)
        if proc.poll() is None:
            # Freeze the server so it starts no new sandbox, then find its sandboxes: each runs in a session
            # of its own, which our SIGKILL of the server's group would not reach and would orphan.
            _signal_group(proc.pid, signal.SIGSTOP)
            sandboxes = _child_groups(proc.pid)
            _signal_group(proc.pid, signal.SIGKILL)
            for group in sandboxes:
                _signal_group(group, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT_S)

    def busy(self) -> bool:
        """A sandboxed program of this server is running: its run script lives under our private TMPDIR."""
        mark = self._tmp.encode()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if mark in cmdline.read_bytes():  # a zombie's cmdline is empty
                    return True
            except OSError:  # ended meanwhile
                continue
        return False

    def output(self, tail_chars: int = 4000) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-tail_chars:]

    def close(self) -> None:
        self.stop()
        self._log.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> LocalPiston:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _child_groups(pid: int) -> list[int]:
    """Process groups led by direct children of `pid` other than its own group (Linux /proc)."""
    groups: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        ppid, pgrp = int(fields[1]), int(fields[2])
        if ppid == pid and pgrp != pid:
            groups.add(pgrp)
    return sorted(groups)


def start_localpiston(env: dict[str, str] | None = None) -> LocalPiston:
    """Start localpiston with these PISTON_* variables (added to os.environ) and wait until it answers."""
    piston = LocalPiston(env)
    try:
        return piston.start()
    except BaseException:
        piston.close()
        raise
