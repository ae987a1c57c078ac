"""A Postgres server of our own in a fresh folder, from the `pgserver` package's bundled binaries.

Used where no ``DATABASE_URL`` is given: ``make run`` (devstack), a test run (started once by the pytest
controller before the test processes need it), and the fault suite (a server it may stop and start). Every start
is a first start: a new folder from ``tempfile.mkdtemp``, removed by ``close()``, so a machine that ran the
project before behaves exactly like one that never did.

As root the binaries run as the unprivileged user pgserver itself uses, since postgres refuses to run as root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

START_TIMEOUT_S = 60


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedPostgres:
    """One throwaway server: ``start()`` (initdb on first call), ``stop()``/``start()`` again, ``close()``.

    ``durable=False`` turns fsync off: for servers that hold nothing worth keeping (tests), where it makes
    every ``CREATE DATABASE`` and restart quick.
    """

    def __init__(self, *, prefix: str = "agenthub-pg-", durable: bool = True, max_connections: int = 200,
                 database: str = "postgres") -> None:
        from pgserver import _commands  # imported here: production installs never need pgserver

        self.bin: Path = _commands.POSTGRES_BIN_PATH
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.durable = durable
        self.max_connections = max_connections
        self.database = database
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
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, exe: str, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        res = subprocess.run([str(self.bin / exe), *args], user=self.user, timeout=timeout,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{exe} exited with {res.returncode}:\n{res.stdout.strip()}\n{self.log()}")

    def start(self) -> EmbeddedPostgres:
        first = not (self.data / "PG_VERSION").exists()
        if first:
            self._run("initdb", "-D", str(self.data), "--auth=trust", "--encoding=utf8", "-U", "postgres")
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections={self.max_connections}"
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", str(START_TIMEOUT_S), "-l", str(self.logfile),
                  "-o", opts, "start")
        if first and self.database != "postgres":
            self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q",
                      "-c", f'CREATE DATABASE "{self.database}"')
        return self

    def stop(self) -> None:
        """Fast shutdown: every session is ended at once, as in a crash-restart or a failover."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", str(START_TIMEOUT_S), "-m", "fast", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def log(self, tail_chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.logfile.read_text(errors="replace")[-tail_chars:]
        return ""

    def close(self) -> None:
        """Stop at once (nothing here is worth a clean shutdown) and remove the folder."""
        if self.running():
            with contextlib.suppress(subprocess.SubprocessError, OSError, RuntimeError):
                self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
