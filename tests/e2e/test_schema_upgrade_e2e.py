"""An installation from before the move into agent_hub, upgraded in place while it works: nothing queued or
running is lost, and the service runs on it end to end.

A dispatcher of the old version still running during the deploy fails loudly and retries: its claims and
heartbeats name tables that are no longer in public (``claim_failed`` / ``heartbeat_failed`` in its log), so
it takes nothing new, its in-flight run's outcome cannot be written, its lease runs out, and a dispatcher of
the new version runs that invocation again (messages keep their ids: none is duplicated).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from core import migrate
from tests import factories
from tests.legacy_layout import install_public_layout
from tests.stack import REPO, Proc, Stack, agent_with_code

# The last commit on main with every object of ours in public (the version an operator upgrades from).
LEGACY_COMMIT = "97bfe3a055628c0d5d3973214745f623a964cb56"
START_SLEEP_END = "import time, hub\nhub.send_message('start')\ntime.sleep(4)\nhub.send_message('end')\n"
ONE_MESSAGE = "import hub\nhub.send_message('hi')\n"


def legacy_enqueue(conn: psycopg.Connection, w: factories.World) -> int:
    """What the old ingress wrote: a row in public.invocation_outbox (its trigger records the event)."""
    row = conn.execute("INSERT INTO public.invocation_outbox (job_id, agent_id, session_id, user_id, prompt) "
                       "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                       (w.job_id, w.agent_id, w.session_id, w.user_id, w.prompt)).fetchone()
    assert row is not None
    return int(row["id"])


@pytest.fixture
def legacy_db(empty_db_url: str) -> str:
    install_public_layout(empty_db_url)
    return empty_db_url


@pytest.fixture
def legacy_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The old version's code, from this repository's history."""
    found = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{LEGACY_COMMIT}^{{commit}}"],
                           capture_output=True, check=False)
    if found.returncode != 0:
        pytest.skip(f"needs the repository's git history: commit {LEGACY_COMMIT[:12]} (the layout before the move) "
                    "is not in this checkout")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", LEGACY_COMMIT],
                             capture_output=True, check=True).stdout
    root = tmp_path_factory.mktemp("legacy-code")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    return root


@pytest.fixture
def stack_on(legacy_db: str) -> Iterator[list[Stack]]:
    made: list[Stack] = []
    yield made
    for s in made:
        s.close()


def wait_until(what: str, check: object, timeout: float, logs: object = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} not within {timeout} s\n{logs() if callable(logs) else ''}"
        time.sleep(0.1)


def test_the_service_runs_end_to_end_on_an_installation_upgraded_from_the_public_layout(
    legacy_db: str, stack_on: list[Stack], tmp_path: Path
) -> None:
    with psycopg.connect(legacy_db, autocommit=True, row_factory=dict_row) as conn:
        queued_before = agent_with_code(conn, tmp_path, ONE_MESSAGE)
        old_id = legacy_enqueue(conn, queued_before)
    migrate.apply(legacy_db, out=open(os.devnull, "w"))  # noqa: SIM115 - the release step

    stack = Stack(legacy_db, dispatcher_env={"DISPATCHER_LEASE_S": "5"}).start()
    stack_on.append(stack)
    assert stack.wait_job(queued_before.job_id)["status"] == "SUCCEEDED"
    assert stack.messages(queued_before.session_id) == ["hi"]
    with stack.connect() as conn:
        after = agent_with_code(conn, tmp_path, ONE_MESSAGE)
    resp = stack.post(after)
    assert resp.status_code == 202, resp.text
    assert resp.json()["invocationId"] > old_id
    assert stack.wait_job(after.job_id)["status"] == "SUCCEEDED"
    with stack.connect() as conn:
        reasons = [r["reason"] for r in conn.execute(
            "SELECT e.reason FROM agent_hub.invocation_outbox_event e WHERE e.outbox_id = %s ORDER BY e.id",
            (old_id,)).fetchall()]
    assert reasons == ["queued", "claimed", "finished"]


def test_an_old_dispatcher_running_through_the_upgrade_fails_loudly_and_its_run_is_taken_over_without_loss(
    legacy_db: str, legacy_code: Path, stack_on: list[Stack], tmp_path: Path
) -> None:
    stack = Stack(legacy_db, web=False, dispatcher_env={"DISPATCHER_LEASE_S": "3"})
    stack_on.append(stack)
    stack.piston.start()
    old = Proc([sys.executable, "-m", "dispatcher", "run"], stack.dispatcher_env, root=legacy_code).start()
    stack.dispatchers.append(old)
    with stack.connect() as conn:
        in_flight = agent_with_code(conn, tmp_path, START_SLEEP_END)
        legacy_enqueue(conn, in_flight)
        wait_until("the old dispatcher's run started", lambda: stack.messages(in_flight.session_id) == ["start"], 30,
                   stack.logs)

        migrate.apply(legacy_db, out=open(os.devnull, "w"))  # noqa: SIM115 - the release step, mid-run
        queued_after = agent_with_code(conn, tmp_path, ONE_MESSAGE)
        factories.enqueue(conn, queued_after)  # the new ingress's SQL

        # The old dispatcher cannot take the new row nor finish its run; it says so and keeps retrying.
        wait_until("the old dispatcher's run to end", lambda: "outcome_not_written" in old.output(), 30, stack.logs)
        wait_until("a claim_failed line", lambda: "claim_failed" in old.output(), 30, stack.logs)
        assert old.alive()
        assert stack.job(queued_after.job_id)["status"] == "QUEUED"

        new = stack.add_dispatcher()
        assert stack.wait_job(queued_after.job_id, timeout=60)["status"] == "SUCCEEDED"
        assert stack.wait_job(in_flight.job_id, timeout=60)["status"] == "SUCCEEDED"
        assert stack.messages(in_flight.session_id) == ["start", "end"]
        row = stack.outbox(in_flight.job_id)
        assert (row["status"], row["attempts"]) == ("succeeded", 2)
        assert row["lease_owner"] is None and "vm:" not in str(row["last_error"] or "")
        reasons = [r["reason"] for r in conn.execute(
            "SELECT reason FROM agent_hub.invocation_outbox_event WHERE outbox_id = %s ORDER BY id", (row["id"],))]
        assert reasons == ["queued", "claimed", "lease expired; reclaimed", "finished"]
        assert new.alive() and old.alive()
