"""The real processes of the service (web, dispatcher, localpiston) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import requests
from psycopg.rows import dict_row

from tests import factories
from tests.integration.localpiston_proc import LocalPiston, free_port

REPO = Path(__file__).resolve().parents[1]
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


class Proc:
    """A child process whose output goes to a temp file (never a pipe that could fill up)."""

    def __init__(self, args: list[str], env: dict[str, str], root: Path = REPO) -> None:
        self.args = args
        self.env = env
        self.root = root  # the code it runs: this checkout, or another version's (upgrade tests)
        # The child appends (O_APPEND) through its own handle and output() reads through another: a shared
        # handle would share one offset, and a child writing while output() had seeked to 0 overwrote its start.
        fd, name = tempfile.mkstemp(prefix="stack-proc-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        env = {**os.environ, **self.env, "PYTHONPATH": str(self.root)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=self.root, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace")

    def close(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


class Stack:
    """localpiston + web + dispatcher on one database."""

    def __init__(self, db_url: str, *, piston_env: dict[str, str] | None = None,
                 dispatcher_env: dict[str, str] | None = None, web_env: dict[str, str] | None = None,
                 web: bool = True) -> None:
        self.db_url = db_url
        self.piston = LocalPiston({"PISTON_RUN_TIMEOUT": "20000", "PISTON_RUN_CPU_TIME": "20000",
                                   "PISTON_OUTPUT_MAX_SIZE": "100000", **(piston_env or {})})
        self.web_port = free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        base = {"DATABASE_URL": db_url, "LOG_FORMAT": "json", "WEB_CONCURRENCY": "1"}
        self._web_env = {**base, **(web_env or {})}
        self.web = self._web_proc() if web else None
        token = (web_env or {}).get("INGRESS_TOKEN")
        self.auth_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.dispatcher_env = {
            **base,
            "PISTON_URL": self.piston.url,
            "AGENT_RUN_TIMEOUT_MS": "10000",
            "DISPATCHER_POLL_INTERVAL_S": "1",
            "DISPATCHER_HEARTBEAT_S": "0.5",
            "DISPATCHER_LEASE_S": "10",
            "DISPATCHER_RETRY_DELAY_S": "0.5",
            "PISTON_RETRY_BASE_S": "0.2",
            **(dispatcher_env or {}),
        }
        self.dispatchers: list[Proc] = []

    def start(self) -> Stack:
        self.piston.start()
        if self.web:
            self.web.start()
        self.add_dispatcher()
        if self.web:
            self._wait_ready()
        return self

    def add_dispatcher(self, **env: str) -> Proc:
        proc = Proc([sys.executable, "-m", "dispatcher", "run"], {**self.dispatcher_env, **env}).start()
        self.dispatchers.append(proc)
        return proc

    def _web_proc(self) -> Proc:
        return Proc([sys.executable, "-m", "ingress", "--host", "127.0.0.1", "--port", str(self.web_port)], self._web_env)

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        port_tries = 3
        while time.monotonic() < deadline:
            assert self.web is not None
            if not self.web.alive():
                # free_port() only finds a port free at that moment: another process may bind it first.
                if "Address already in use" in self.web.output() and port_tries > 1:
                    port_tries -= 1
                    self.web_port = free_port()
                    self.web_url = f"http://127.0.0.1:{self.web_port}"
                    self.web = self._web_proc().start()
                    continue
                raise RuntimeError(f"web exited:\n{self.web.output()}")
            try:
                if requests.get(self.web_url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError("web did not become ready")

    def close(self) -> None:
        for d in self.dispatchers:
            d.close()
        if self.web:
            self.web.close()
        self.piston.close()

    def logs(self) -> str:
        parts = [f"--- dispatcher {i} ---\n{d.output()[-6000:]}" for i, d in enumerate(self.dispatchers)]
        if self.web:
            parts.append(f"--- web ---\n{self.web.output()[-3000:]}")
        parts.append(f"--- piston ---\n{self.piston.output()}")
        return "\n".join(parts)

    # -- the hub's side ------------------------------------------------------
    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.db_url, autocommit=True, row_factory=dict_row)

    def post(self, w: factories.World) -> requests.Response:
        return requests.post(self.web_url + w.invoke_path, json=w.invoke_body(), headers=self.auth_headers, timeout=10)

    def job(self, job_id: str) -> dict[str, Any]:
        with self.connect() as c:
            row = c.execute('SELECT * FROM "Job" WHERE "id" = %s', (job_id,)).fetchone()
        assert row is not None
        return row

    def wait_job(self, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.job(job_id)
            if row["status"] in statuses:
                return row
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} still {self.job(job_id)['status']} after {timeout} s\n{self.logs()}")

    def messages(self, session_id: str, role: str | None = "agent") -> list[str]:
        with self.connect() as c:
            rows = c.execute(
                'SELECT "role", "content" FROM "ChatMessage" WHERE "sessionId" = %s ORDER BY "timestamp", "id"',
                (session_id,),
            ).fetchall()
        return [r["content"] for r in rows if role is None or r["role"] == role]

    def job_logs(self, job_id: str) -> list[dict[str, Any]]:
        with self.connect() as c:
            return c.execute('SELECT "level", "message" FROM "JobLog" WHERE "jobId" = %s ORDER BY "timestamp", "id"',
                             (job_id,)).fetchall()

    def outbox(self, job_id: str) -> dict[str, Any]:
        with self.connect() as c:
            row = c.execute("SELECT * FROM agent_hub.invocation_outbox WHERE job_id = %s", (job_id,)).fetchone()
        assert row is not None
        return row


def agent_with_code(conn: psycopg.Connection, tmp: Path, code: str, *, name: str = "main.py",
                    env: dict[str, str] | None = None, prompt: str = "hello agent",
                    extra_files: dict[str, str] | None = None) -> factories.World:
    """A world whose agent's main.py is `code` (written under tmp, referenced by absolute path)."""
    w = factories.world(conn, prompt=prompt)
    folder = tmp / w.agent_id
    folder.mkdir(parents=True)
    for fname, content in {name: code, **(extra_files or {})}.items():
        path = folder / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        factories.agent_file(conn, w.agent_id, fname, str(path), len(content))
    for k, v in (env or {}).items():
        factories.env_var(conn, w.agent_id, k, v)
    return w
