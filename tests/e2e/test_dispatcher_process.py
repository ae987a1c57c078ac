"""The dispatcher as a process: start-up configuration errors and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.stack import REPO, Proc


def run_dispatcher(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PISTON_URL")}
    return subprocess.run([sys.executable, "-m", "dispatcher", "run"], env={**base, **env, "PYTHONPATH": str(REPO)},
                          cwd=REPO, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PISTON_URL": "http://127.0.0.1:2000"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://x@127.0.0.1/db"}, "PISTON_URL"),
        ({"DATABASE_URL": "postgresql://x@127.0.0.1/db", "PISTON_URL": "ftp://piston"}, "PISTON_URL"),
        ({"DATABASE_URL": "postgresql://x@127.0.0.1/db", "PISTON_URL": "http://p", "DISPATCHER_CONCURRENCY": "many"},
         "DISPATCHER_CONCURRENCY"),
        ({"DATABASE_URL": "postgresql://x@127.0.0.1/db", "PISTON_URL": "http://p", "PISTON_TRANSPORT": "carrier-pigeon"},
         "PISTON_TRANSPORT"),
    ],
    ids=["no-database-url", "no-piston-url", "bad-piston-scheme", "bad-concurrency", "bad-transport"],
)
def test_bad_configuration_stops_the_dispatcher_with_one_line_naming_the_variable(env: dict[str, str], named: str) -> None:
    done = run_dispatcher(env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "configuration error" in lines[0], done.stderr


def test_idle_dispatcher_stops_cleanly_on_sigterm(db_url: str) -> None:
    proc = Proc([sys.executable, "-m", "dispatcher", "run"],
                {"DATABASE_URL": db_url, "PISTON_URL": "http://127.0.0.1:9", "LOG_FORMAT": "json"}).start()
    try:
        deadline = time.monotonic() + 20
        while "dispatcher_started" not in proc.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "dispatcher_started" in proc.output(), proc.output()
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.output()
        assert "dispatcher_stopped" in proc.output()
    finally:
        proc.close()
