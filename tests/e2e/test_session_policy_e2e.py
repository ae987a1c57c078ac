"""HUB_SESSION_POLICY with the real processes (issue 16, item 5) and a Piston server of ONE slot: under
``interrupt`` a new prompt cancels the session's running job, which is really stopped (the new prompt's run
gets the only slot long before the old one's own time would end), and runs next; under ``reject`` the invoke
endpoint answers 409 ``session_busy`` and queues nothing while a job of the session is queued or running.

Two web processes with the two policies share one database, dispatcher and Piston.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from tests import factories
from tests.integration.localpiston_proc import free_port
from tests.stack import Proc, Stack, agent_with_code
from tests.waiting import wait_until

HOLD_S = 120
FREED_WITHIN_S = 60
AGENT = f"""\
import time, hub
if hub.get_prompt() == "long":
    hub.send_message("started long")
    time.sleep({HOLD_S})
hub.send_message("answer to " + hub.get_prompt())
"""


class Web:
    """A second web process on the stack's database, with its own environment."""

    def __init__(self, stack: Stack, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "ingress", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = Proc(args, {"DATABASE_URL": stack.db_url, "LOG_FORMAT": "json", "WEB_CONCURRENCY": "1", **env})

    def start(self) -> Web:
        self.proc.start()
        wait_until(self._ready, timeout=60, what="the second web to be ready", details=self.proc.output)
        return self

    def _ready(self) -> bool:
        try:
            return requests.get(self.url + "/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def post(self, w: factories.World) -> requests.Response:
        return requests.post(self.url + w.invoke_path, json=w.invoke_body(), timeout=10)


@pytest.fixture(scope="module")
def stack(module_db_url: str) -> Iterator[Stack]:
    limit = str((HOLD_S + 60) * 1000)
    s = Stack(module_db_url, web_env={"HUB_SESSION_POLICY": "interrupt"},
              piston_env={"PISTON_MAX_CONCURRENT_JOBS": "1", "PISTON_RUN_TIMEOUT": limit, "PISTON_RUN_CPU_TIME": limit},
              dispatcher_env={"DISPATCHER_CONCURRENCY": "2", "AGENT_RUN_TIMEOUT_MS": limit, "PISTON_TRANSPORT": "ws"})
    s.start()
    yield s
    s.close()


@pytest.fixture(scope="module")
def reject_web(stack: Stack) -> Iterator[Web]:
    web = Web(stack, HUB_SESSION_POLICY="reject").start()
    yield web
    web.proc.close()


def next_prompt(conn: psycopg.Connection, w: factories.World, prompt: str) -> factories.World:
    """Another prompt of w's session, written as Next.js writes it."""
    factories.chat_message(conn, w.session_id, "user", prompt)
    return factories.World(w.user_id, w.agent_id, w.session_id, factories.job(conn, w.user_id, w.agent_id, w.session_id),
                           prompt)


def test_interrupt_stops_the_sessions_running_job_and_runs_the_new_prompt_next(
    stack: Stack, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    first = agent_with_code(hub_conn, tmp_path, AGENT, prompt="long")
    assert stack.post(first).status_code == 202
    wait_until(lambda: stack.messages(first.session_id) == ["started long"], what="the long run to start",
               details=stack.logs)
    second = next_prompt(hub_conn, first, "what now?")
    assert stack.post(second).status_code == 202
    job = stack.wait_job(second.job_id, timeout=FREED_WITHIN_S)
    assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
    assert stack.job(first.job_id)["status"] == "CANCELLED"
    assert stack.outbox(first.job_id)["status"] == "cancelled"
    assert stack.messages(first.session_id) == ["started long", "answer to what now?"]


def test_reject_answers_409_while_the_session_is_busy_and_queues_nothing(
    stack: Stack, reject_web: Web, hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    first = agent_with_code(hub_conn, tmp_path, AGENT, prompt="long")
    assert reject_web.post(first).status_code == 202
    second = next_prompt(hub_conn, first, "are you there?")
    busy = reject_web.post(second)  # while the first is queued or running
    assert busy.status_code == 409 and busy.json()["error"] == "session_busy", busy.text
    wait_until(lambda: stack.messages(first.session_id) == ["started long"], what="the long run to start",
               details=stack.logs)
    busy = reject_web.post(second)
    assert busy.status_code == 409 and busy.json()["error"] == "session_busy", busy.text
    with stack.connect() as c:
        assert c.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox WHERE job_id = %s",
                         (second.job_id,)).fetchone()["n"] == 0
    hub_conn.execute("""UPDATE "Job" SET "status" = 'CANCELLED' WHERE "id" = %s""", (first.job_id,))  # the user stops it
    wait_until(lambda: stack.outbox(first.job_id)["status"] == "cancelled", what="the first row to end",
               details=stack.logs)
    assert reject_web.post(second).status_code == 202  # idle again
    job = stack.wait_job(second.job_id, timeout=FREED_WITHIN_S)
    assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
