"""The sandbox: boxes (a fresh directory per job: `<box>/submission` is the working directory, `<box>/tmp` is
HOME), the processes running in them, and reaping what exits (localpiston/isolation.py isolates them,
localpiston/execution.py runs one)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from typing import Any

from .execution import Execution
from .isolation import (
    PR_SET_CHILD_SUBREAPER,
    Box,
    Isolation,
    MemoryCgroups,
    UidSlot,
    kill_session,
    kill_uid,
    libc,
    read_proc_stats,
)

log = logging.getLogger("localpiston")

TICK = 0.1  # isolate's TIMER_INTERVAL_US
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"



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
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of a box come back to us
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
                stats = read_proc_stats()
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
            kill_session(pid)

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
