"""`python -m dispatcher verify`: a deployment check that says what is wrong, exit 0 or 1."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from tests.integration.localpiston_proc import LocalPiston, free_port
from tests.stack import REPO


@pytest.fixture(scope="module")
def piston() -> Iterator[LocalPiston]:
    p = LocalPiston()
    p.start()
    yield p
    p.close()


def verify(db_url: str, piston_url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url, "PISTON_URL": piston_url, "PYTHONPATH": str(REPO), **extra}
    return subprocess.run([sys.executable, "-m", "dispatcher", "verify"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_verify_passes_on_a_migrated_hub_database_and_localpiston(db_url: str, piston: LocalPiston) -> None:
    proc = verify(db_url, piston.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   migrations: all" in proc.stdout
    assert "ok   piston: " in proc.stdout and "python 3" in proc.stdout
    assert proc.stdout.rstrip().endswith("verify: all checks passed")


def test_verify_fails_on_an_empty_database_naming_what_is_missing(empty_db_url: str, piston: LocalPiston) -> None:
    proc = verify(empty_db_url, piston.url)
    assert proc.returncode == 1
    assert "FAIL migrations: not applied: 0001_invocation_outbox" in proc.stdout
    assert 'FAIL prisma tables: missing: "Agent"' in proc.stdout
    assert "ok   piston" in proc.stdout


def test_verify_fails_when_a_prisma_column_is_gone(db_url: str, piston: LocalPiston) -> None:
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute('ALTER TABLE "JobLog" DROP COLUMN "level"')
    proc = verify(db_url, piston.url)
    assert proc.returncode == 1
    assert 'FAIL prisma tables: missing columns: "JobLog"."level"' in proc.stdout


def test_verify_fails_when_piston_is_down(db_url: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = verify(db_url, url)
    assert proc.returncode == 1
    assert f"FAIL piston: {url}: not reachable" in proc.stdout
    assert "ok   migrations" in proc.stdout


def test_verify_fails_when_the_database_is_unreachable(piston: LocalPiston) -> None:
    proc = verify(f"postgresql://nobody@127.0.0.1:{free_port()}/none", piston.url)
    assert proc.returncode == 1
    assert "FAIL database: cannot connect" in proc.stdout


def test_verify_reports_the_servers_own_run_limits(db_url: str, piston: LocalPiston) -> None:
    proc = verify(db_url, piston.url, AGENT_RUN_TIMEOUT_MS="60000")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("; limits run_timeout 3000 ms, run_cpu_time 3000 ms, run_memory_limit not limited "
            "(AGENT_RUN_TIMEOUT_MS 60000 is above it: runs go at 3000 ms)") in proc.stdout
    assert "piston_limit_learned" not in proc.stdout + proc.stderr  # probed on purpose: reported, not logged


def test_verify_checks_every_server_of_a_pool_and_names_each(db_url: str, piston: LocalPiston) -> None:
    with LocalPiston({"PISTON_RUN_TIMEOUT": "20000", "PISTON_RUN_MEMORY_LIMIT": "500000000"}) as other:
        other.start()
        down = f"http://127.0.0.1:{free_port()}"
        proc = verify(db_url, f"{piston.url}=16,{other.url},{down}=8")
    assert proc.returncode == 1
    assert f"ok   piston {piston.url} (16 slots): {piston.url}: python 3" in proc.stdout
    assert (f"ok   piston {other.url} (64 slots): {other.url}: python 3") in proc.stdout
    assert "limits run_timeout 20000 ms, run_cpu_time 3000 ms, run_memory_limit 500000000 bytes" in proc.stdout
    assert f"FAIL piston {down} (8 slots): {down}: not reachable" in proc.stdout
