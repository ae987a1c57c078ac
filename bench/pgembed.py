"""A dedicated Postgres for the benchmarks, from pgserver's bundled binaries, with explicit durability.

Not the tests' shared server: its settings are ours to choose and to report (fsync and
synchronous_commit ON, so every commit waits for its WAL flush, as in production).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

# Stated explicitly so the report names what was measured, whatever initdb's defaults are.
DURABLE_SETTINGS: dict[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "wal_sync_method": "fdatasync",
    "max_connections": "200",
    "shared_buffers": "256MB",
}
REPORTED = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_sync_method",
            "shared_buffers", "max_connections", "commit_delay", "wal_level")


def _bin_dir() -> Path:
    import pgserver

    return Path(pgserver.__file__).resolve().parent / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedPostgres:
    """initdb + pg_ctl start in a temp folder; `stop()` removes everything."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="agenthub-bench-pg-")))
    port: int = field(default_factory=_free_port)
    user: str | None = None  # the OS user running postgres (it refuses root)

    @property
    def bin(self) -> Path:
        return _bin_dir()

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, args: list[str]) -> None:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs["user"] = self.user
            kwargs["group"] = pwd.getpwnam(self.user).pw_gid
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)

    def start(self) -> EmbeddedPostgres:
        if os.geteuid() == 0:
            self.user = "pgserver"
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                subprocess.run(["useradd", "-s", "/bin/false", self.user], check=True)
            os.chmod(self.root, 0o755)
            self.data.mkdir()
            entry = pwd.getpwnam(self.user)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=utf8"])
        options = " ".join(f"-c {k}={v}" for k, v in {
            **DURABLE_SETTINGS, "port": str(self.port), "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.data),
        }.items())
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.data / "log"), "-w", "start"])
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def settings(self) -> dict[str, str]:
        with psycopg.connect(self.url()) as conn:
            rows = conn.execute("SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)", (list(REPORTED),)).fetchall()
        out = {}
        for name, setting, unit in rows:
            out[name] = f"{setting}{'' if unit in (None, '') else ' x ' + unit}"
        return dict(sorted(out.items()))

    def create_db(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)
