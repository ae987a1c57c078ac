"""A Postgres server of a test's own, from the `pgserver` package's bundled binaries, that the test may stop
and start (CI's shared server cannot be restarted). As root the binaries run as the unprivileged user pgserver
itself uses, since postgres refuses to run as root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from core import migrate
from tests.integration.localpiston_proc import free_port


class DedicatedPostgres:
    def __init__(self) -> None:
        from pgserver import _commands  # the bundled binaries; imported here so only this helper needs them

        self.bin = _commands.POSTGRES_BIN_PATH
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="agenthub-dpg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.user: str | None = None
        if os.geteuid() == 0:
            from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

            self.user = "pgserver"
            ensure_user_exists(self.user)
            ensure_prefix_permissions(self.root)
            ensure_folder_permissions(self.bin, 0o555)
            ensure_folder_permissions(self.bin.parent / "lib", 0o444)
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/hub"

    def _run(self, exe: str, *args: str, timeout: float = 60) -> None:
        subprocess.run([str(self.bin / exe), *args], check=True, user=self.user, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> DedicatedPostgres:
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "--auth=trust", "--encoding=utf8", "-U", "postgres")
            self._start()
            subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                            "-c", "CREATE DATABASE hub"], check=True, timeout=30, stdout=subprocess.DEVNULL)
            migrate.apply(self.url, prisma=True, out=open(os.devnull, "w"))  # noqa: SIM115
        else:
            self._start()
        return self

    def _start(self) -> None:
        # fsync off: this server holds nothing worth keeping, and it makes the restart quick.
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-l", str(self.logfile), "-o", opts, "start")

    def stop(self) -> None:
        """Fast shutdown: every session is ended at once, as in a crash-restart or a failover."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-m", "fast", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def log(self, tail_chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.logfile.read_text(errors="replace")[-tail_chars:]
        return ""

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
