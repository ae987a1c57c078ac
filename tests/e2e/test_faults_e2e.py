"""Fault injection on the real processes: the promise is that a 2xx from the ingress means the Job ends
SUCCEEDED, FAILED or CANCELLED whatever happens to our processes, Postgres or Piston, with every agent
message written exactly once and no outbox row left running.

Faults: SIGKILLed dispatchers, a Postgres restart (on a dedicated server), Piston down for 20 s and past the
retry budget (then an operator replay), SIGTERM within and past the grace, a killed LISTEN connection,
and an operator cancel of a running invocation.

The SIGKILL schedule (pauses between kills, which dispatcher dies) is random. A failure of that test shows
"FAULT_SEED=<n>" (a report section, and in its assertion messages); replay the same schedule with

    FAULT_SEED=<n> .venv/bin/python -m pytest -p no:cacheprovider tests/e2e/test_faults_e2e.py -k sigkills

(the machine's own timing still differs from run to run, so a replay is likelier, not certain, to fail alike).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from tests import factories
from tests.e2e.dedicated_pg import DedicatedPostgres
from tests.stack import REPO, TERMINAL, Proc, Stack, agent_with_code
from tests.waiting import wait_until

# Short leases so a killed dispatcher's rows are reclaimed within seconds.
FAST = {"DISPATCHER_LEASE_S": "3", "DISPATCHER_HEARTBEAT_S": "0.5", "DISPATCHER_POLL_INTERVAL_S": "0.5",
        "DISPATCHER_CONCURRENCY": "4", "PYTHONUNBUFFERED": "1"}  # unbuffered: a SIGKILLed dispatcher's log survives
THREE = ["m0", "m1", "m2"]
THREE_MESSAGES = "import time, hub\nfor i in range(3):\n    hub.send_message(f'm{i}')\n    time.sleep(0.1)\n"
# The SIGKILL test's agent: long enough that 200 of them outlast 20 kills, each of which waits for a
# replacement dispatcher to start, on a loaded machine too (a faster drain once left no work for the last kills).
PACED_THREE_MESSAGES = "import time, hub\nfor i in range(3):\n    hub.send_message(f'm{i}')\n    time.sleep(0.25)\n"
SLOW_THREE_MESSAGES = "import time, hub\nfor i in range(3):\n    hub.send_message(f'm{i}')\n    time.sleep(0.7)\n"
START_SLEEP_END = "import time, hub\nhub.send_message('start')\ntime.sleep({sleep})\nhub.send_message('end')\n"
ONE_MESSAGE = "import hub\nhub.send_message('hi')\n"


# -- helpers -----------------------------------------------------------------------------------------
def worlds(conn: psycopg.Connection, tmp: Path, code: str, n: int) -> list[factories.World]:
    """n invocations of one agent, each on its own session (the hub's rows, as Next.js writes them)."""
    first = agent_with_code(conn, tmp, code)
    out = [first]
    for _ in range(n - 1):
        sid = factories.session(conn, first.user_id, first.agent_id)
        factories.chat_message(conn, sid, "user", first.prompt)
        jid = factories.job(conn, first.user_id, first.agent_id, sid)
        out.append(factories.World(first.user_id, first.agent_id, sid, jid, first.prompt))
    return out


def post_all(stack: Stack, ws: list[factories.World], http: requests.Session | None = None) -> None:
    http = http or requests.Session()
    for w in ws:
        resp = http.post(stack.web_url + w.invoke_path, json=w.invoke_body(), headers=stack.auth_headers, timeout=15)
        assert resp.status_code == 202, resp.text


def job_statuses(stack: Stack, ws: list[factories.World]) -> dict[str, str]:
    with stack.connect() as c:
        rows = c.execute('SELECT "id", "status"::text AS status FROM "Job" WHERE "id" = ANY(%s)',
                         ([w.job_id for w in ws],)).fetchall()
    return {r["id"]: r["status"] for r in rows}


def open_count(stack: Stack, ws: list[factories.World]) -> int:
    """How many of these Jobs have not finished yet."""
    return sum(1 for s in job_statuses(stack, ws).values() if s not in TERMINAL)


def running_rows_of(stack: Stack, dispatcher: Proc) -> int:
    """Rows the dispatcher process holds right now (its lease owner names its pid)."""
    pid = dispatcher.proc.pid if dispatcher.proc is not None else -1
    with stack.connect() as c:
        row = c.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox WHERE status = 'running' "
                        "AND split_part(lease_owner, ':', 2) = %s", (str(pid),)).fetchone()
    return int(row["n"]) if row else 0


def wait_all(stack: Stack, ws: list[factories.World], statuses: tuple[str, ...] = TERMINAL,
             timeout: float = 90.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        found = job_statuses(stack, ws)
        if all(found.get(w.job_id) in statuses for w in ws):
            return found
        if time.monotonic() > deadline:
            left = {s: sum(1 for v in found.values() if v == s) for s in set(found.values())}
            raise AssertionError(f"jobs not {statuses} after {timeout} s: {left}\n{stack.logs()}")
        time.sleep(0.2)


def messages_by_session(stack: Stack, ws: list[factories.World]) -> dict[str, list[str]]:
    with stack.connect() as c:
        rows = c.execute('SELECT "sessionId" AS sid, "content" FROM "ChatMessage" WHERE "sessionId" = ANY(%s) '
                         "AND \"role\" = 'agent' ORDER BY \"timestamp\", \"id\"", ([w.session_id for w in ws],)).fetchall()
    out: dict[str, list[str]] = {w.session_id: [] for w in ws}
    for r in rows:
        out[r["sid"]].append(r["content"])
    return out


def assert_all_succeeded_exactly_once(stack: Stack, ws: list[factories.World], expected: list[str]) -> None:
    found = wait_all(stack, ws)
    bad = {jid: s for jid, s in found.items() if s != "SUCCEEDED"}
    assert not bad, f"{len(bad)} jobs not SUCCEEDED: {list(bad.items())[:5]}\n{stack.logs()}"
    wrong = {sid: m for sid, m in messages_by_session(stack, ws).items() if m != expected}
    assert not wrong, f"{len(wrong)} sessions with missing or repeated messages, e.g. {list(wrong.items())[:3]}"
    with stack.connect() as c:
        open_rows = c.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox WHERE status IN ('pending', 'running')"
                              ).fetchone()
    assert open_rows is not None and open_rows["n"] == 0


def event_count(stack: Stack, reason: str) -> int:
    with stack.connect() as c:
        row = c.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox_event WHERE reason = %s", (reason,)).fetchone()
    assert row is not None
    return int(row["n"])


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DATABASE_URL": db_url, "USER": "fault-tests"}
    return subprocess.run([sys.executable, "-m", "dispatcher", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def hub(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        yield c


# -- 1. SIGKILLed dispatchers ------------------------------------------------------------------------
class StaleLeaseWatch(threading.Thread):
    """Samples, while the test runs, how long the longest-expired lease of a still-running row has been expired."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.worst_s = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        with self.stack.connect() as c:
            while not self.done.wait(0.25):
                row = c.execute("SELECT coalesce(extract(epoch FROM now() - min(lease_expires_at)), 0)::float8 AS s "
                                "FROM agent_hub.invocation_outbox WHERE status = 'running'").fetchone()
                assert row is not None
                self.worst_s = max(self.worst_s, row["s"])


def fault_seed(request: pytest.FixtureRequest) -> int:
    """FAULT_SEED from the environment (to replay a failure), else a fresh one; shown with any failure."""
    given = os.environ.get("FAULT_SEED", "").strip()
    seed = int(given) if given else random.randrange(1 << 30)
    request.node.add_report_section("call", "fault seed", f"FAULT_SEED={seed}")
    return seed


def test_twenty_sigkills_of_dispatchers_during_200_invocations_lose_and_repeat_nothing(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    seed = fault_seed(request)
    rnd = random.Random(seed)
    stack = Stack(db_url, dispatcher_env=FAST).start()
    watch = StaleLeaseWatch(stack)
    try:
        stack.add_dispatcher()
        with stack.connect() as conn:
            ws = worlds(conn, tmp_path, PACED_THREE_MESSAGES, 400)
        watch.start()
        http = requests.Session()
        post_all(stack, ws[:200], http)
        posted = 200
        kills = landed = 0
        while kills < 20:
            time.sleep(rnd.uniform(0.2, 0.8))
            # Kill only while another dispatcher is up and claiming: with both still importing nothing could
            # take the victim's rows, and the test would measure start-up time, not recovery.
            ready = [d for d in stack.dispatchers if d.alive() and "dispatcher_started" in d.output()]
            if len(ready) < 2:
                continue
            # Keep work queued for every kill, however slowly a loaded machine starts the replacements.
            if posted < len(ws) and open_count(stack, ws[:posted]) < 40:
                post_all(stack, ws[posted:posted + 40], http)
                posted += 40
            # A dispatcher with runs in flight if there is one: a fresh replacement may not have claimed yet
            # (slowly, on a loaded machine), and a kill that hits no run tests nothing.
            busy = [d for d in ready if running_rows_of(stack, d) > 0]
            victim = rnd.choice(busy or ready)
            landed += bool(busy)
            victim.signal(signal.SIGKILL)
            assert victim.wait(10) == -signal.SIGKILL
            kills += 1
            stack.add_dispatcher()
        ws = ws[:posted]  # the ones never needed stay unposted
        assert landed >= 10, f"only {landed} of 20 kills hit a dispatcher with runs in flight (FAULT_SEED={seed})"
        assert_all_succeeded_exactly_once(stack, ws, THREE)
        # The kills did hit runs in flight (so the test can fail), and their rows were taken over.
        assert event_count(stack, "lease expired; reclaimed") >= 5, f"FAULT_SEED={seed}"
        # A killed dispatcher's row waits for its lease to expire, then at most about one poll interval (plus
        # a free slot: the survivors may all be busy). Generous bound (17.7 s was seen at load 11): it catches
        # "never reclaimed", not speed.
        assert watch.worst_s < 20.0, f"a running row's lease stayed expired for {watch.worst_s:.1f} s (FAULT_SEED={seed})"
    finally:
        watch.done.set()
        stack.close()


# -- 2. Postgres restarted ---------------------------------------------------------------------------
@pytest.fixture
def dedicated_pg() -> Iterator[DedicatedPostgres]:
    pg = DedicatedPostgres().start()
    yield pg
    pg.close()


def test_postgres_restart_during_200_invocations_gives_503_while_down_and_loses_nothing(
    dedicated_pg: DedicatedPostgres, tmp_path: Path
) -> None:
    url = dedicated_pg.url
    stack = Stack(url, web_env={"DB_POOL_TIMEOUT": "1"},
                  dispatcher_env={**FAST, "DISPATCHER_LEASE_S": "4", "DISPATCHER_CONCURRENCY": "8"}).start()
    try:
        with stack.connect() as conn:
            # The first 16 take ~2 s, so runs are surely in flight when Postgres stops, however quickly
            # the machine drains the fast ones (seen: with only fast agents the posts could lose the race).
            ws = worlds(conn, tmp_path, SLOW_THREE_MESSAGES, 16) + worlds(conn, tmp_path, THREE_MESSAGES, 184)
        http = requests.Session()
        accepted: set[str] = set()
        refused: list[factories.World] = []
        outage_codes: list[int] = []

        def post(w: factories.World) -> int:
            # timeout: a hang fails here
            resp = http.post(stack.web_url + w.invoke_path, json=w.invoke_body(), headers=stack.auth_headers, timeout=15)
            if resp.status_code in (200, 202):
                accepted.add(w.job_id)
            else:
                assert resp.status_code == 503, resp.text
                assert resp.headers["Content-Type"].startswith("application/json")
                assert resp.json()["error"] == "database_unavailable"
                refused.append(w)
            return resp.status_code

        for w in ws[:100]:
            post(w)
        # Slow runs are in flight (one is enough; on a loaded machine they need not all be at once).
        deadline = time.monotonic() + 60
        while "PROCESSING" not in job_statuses(stack, ws[:16]).values():
            assert time.monotonic() < deadline, f"no slow run started within 60 s\n{stack.logs()}"
            time.sleep(0.05)
        down_at = time.time()  # wall clock, as Postgres's now(): same machine
        dedicated_pg.stop()
        stopped_at = time.time()  # Postgres is fully down: nothing can commit until it is back
        for w in ws[100:105]:
            outage_codes.append(post(w))
        time.sleep(2)
        dedicated_pg.start()
        for w in ws[105:]:
            post(w)
        # Whatever was refused is re-posted, as Next.js's caller would; the web recovered without a restart.
        deadline = time.monotonic() + 30
        while refused and time.monotonic() < deadline:
            retry, refused[:] = list(refused), []
            for w in retry:
                post(w)
            if refused:
                time.sleep(0.5)
        assert not refused, f"{len(refused)} still refused after Postgres came back\n{stack.logs()}"
        assert outage_codes == [503] * 5
        assert accepted == {w.job_id for w in ws}
        assert_all_succeeded_exactly_once(stack, ws, THREE)
        assert all(d.alive() for d in stack.dispatchers), "the dispatcher must ride out the outage"
        assert "listen_connection_lost" in stack.dispatchers[0].output()
        with stack.connect() as c:
            # Started before the stop and finished after Postgres was fully down: it lived through the outage.
            # (Not "after start() returned": a retried write may commit while pg_ctl is still polling.)
            spanning = c.execute("SELECT count(*) AS n FROM agent_hub.invocation_outbox WHERE started_at < to_timestamp(%s) "
                                 "AND finished_at > to_timestamp(%s)", (down_at, stopped_at)).fetchone()
        assert spanning is not None and spanning["n"] > 0, "some runs must have been in flight across the restart"
    finally:
        stack.close()


# -- 3. Piston down ----------------------------------------------------------------------------------
def test_piston_down_for_20_s_is_retried_and_every_invocation_then_succeeds(db_url: str, tmp_path: Path) -> None:
    stack = Stack(db_url, dispatcher_env={
        **FAST, "PISTON_RETRY_ATTEMPTS": "2", "PISTON_RETRY_BASE_S": "0.2",
        "DISPATCHER_RETRY_DELAY_S": "1", "DISPATCHER_RETRY_MAX_DELAY_S": "3",
    }, web_env={"OUTBOX_MAX_ATTEMPTS": "20"}).start()
    try:
        with stack.connect() as conn:
            ws = worlds(conn, tmp_path, THREE_MESSAGES, 20)
        post_all(stack, ws)
        wait_all(stack, ws[:1], ("PROCESSING", *TERMINAL), timeout=30)
        stack.piston.kill()
        time.sleep(20)
        assert sum(1 for s in job_statuses(stack, ws).values() if s == "SUCCEEDED") < len(ws)
        stack.piston.start()
        assert_all_succeeded_exactly_once(stack, ws, THREE)
        assert event_count(stack, "transient fault; retry later") > 0
        logs = [entry["message"] for w in ws for entry in stack.job_logs(w.job_id)]
        assert any("Piston unavailable" in m for m in logs)
    finally:
        stack.close()


def test_piston_down_past_the_retry_budget_fails_clearly_and_an_operator_replay_then_succeeds(
    db_url: str, tmp_path: Path
) -> None:
    stack = Stack(db_url, dispatcher_env={
        **FAST, "PISTON_RETRY_ATTEMPTS": "2", "PISTON_RETRY_BASE_S": "0.1",
        "DISPATCHER_RETRY_DELAY_S": "0.1", "DISPATCHER_RETRY_MAX_DELAY_S": "0.2",
    }, web_env={"OUTBOX_MAX_ATTEMPTS": "2"}).start()
    try:
        stack.piston.stop()
        with stack.connect() as conn:
            ws = worlds(conn, tmp_path, ONE_MESSAGE, 10)
        post_all(stack, ws)
        assert set(wait_all(stack, ws, timeout=60).values()) == {"FAILED"}
        for w in ws:
            error = stack.job(w.job_id)["errorMessage"]
            assert "Piston unavailable" in error and "gave up after 2 attempts" in error, error
        stack.piston.start()
        res = cli(db_url, "replay", "--status", "failed", "--since", "1h", "--reason", "piston is back")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "10 done" in res.stdout
        assert_all_succeeded_exactly_once(stack, ws, ["hi"])
        with stack.connect() as c:
            replays = c.execute("SELECT DISTINCT actor, reason FROM agent_hub.invocation_outbox_event "
                                "WHERE from_status = 'failed' AND to_status = 'pending'").fetchall()
        assert [(r["actor"].split("@")[0], r["reason"]) for r in replays] == [("fault-tests", "piston is back")]
    finally:
        stack.close()


# -- 4. SIGTERM --------------------------------------------------------------------------------------
def wait_messages(stack: Stack, ws: list[factories.World], expected: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(m != expected for m in messages_by_session(stack, ws).values()):
        assert time.monotonic() < deadline, f"messages never became {expected}\n{stack.logs()}"
        time.sleep(0.05)


def test_sigterm_lets_runs_finish_within_the_grace_and_claims_nothing_new(db_url: str, tmp_path: Path) -> None:
    stack = Stack(db_url, dispatcher_env={**FAST, "DISPATCHER_CONCURRENCY": "6", "DISPATCHER_SHUTDOWN_GRACE_S": "10"})
    stack.start()
    try:
        with stack.connect() as conn:
            ws = worlds(conn, tmp_path, START_SLEEP_END.format(sleep=2), 7)
        post_all(stack, ws[:6])
        wait_messages(stack, ws[:6], ["start"])
        dispatcher = stack.dispatchers[0]
        dispatcher.signal(signal.SIGTERM)
        post_all(stack, ws[6:])  # queued during the drain: must wait for the next dispatcher
        assert dispatcher.wait(30) == 0, dispatcher.output()[-3000:]
        assert set(job_statuses(stack, ws[:6]).values()) == {"SUCCEEDED"}
        assert all(m == ["start", "end"] for m in messages_by_session(stack, ws[:6]).values())
        assert all(stack.outbox(w.job_id)["attempts"] == 1 for w in ws[:6])
        assert stack.outbox(ws[6].job_id)["status"] == "pending" and stack.job(ws[6].job_id)["status"] == "QUEUED"
        stack.add_dispatcher()
        assert_all_succeeded_exactly_once(stack, ws, ["start", "end"])
    finally:
        stack.close()


def test_sigterm_past_the_grace_releases_runs_to_another_dispatcher_without_losing_or_repeating(
    db_url: str, tmp_path: Path
) -> None:
    stack = Stack(db_url, dispatcher_env={**FAST, "DISPATCHER_SHUTDOWN_GRACE_S": "1"}).start()
    try:
        with stack.connect() as conn:
            ws = worlds(conn, tmp_path, START_SLEEP_END.format(sleep=5), 4)
        post_all(stack, ws)
        wait_messages(stack, ws, ["start"])
        dispatcher = stack.dispatchers[0]
        dispatcher.signal(signal.SIGTERM)
        assert dispatcher.wait(15) == 0, dispatcher.output()[-3000:]
        for w in ws:
            row = stack.outbox(w.job_id)
            assert (row["status"], row["attempts"], row["lease_owner"]) == ("pending", 0, None)
            assert stack.job(w.job_id)["status"] == "QUEUED"
        assert event_count(stack, "released at shutdown") == 4
        stack.add_dispatcher()
        assert_all_succeeded_exactly_once(stack, ws, ["start", "end"])
    finally:
        stack.close()


# -- 5. LISTEN health --------------------------------------------------------------------------------
def listener_pids(stack: Stack) -> list[int]:
    with stack.connect() as c:
        rows = c.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'agent-hub-dispatcher-listen' "
                         "AND datname = current_database()").fetchall()
    return [r["pid"] for r in rows]


def test_a_killed_listen_connection_is_replaced_and_new_invocations_are_still_picked_up_at_once(
    db_url: str, tmp_path: Path
) -> None:
    # A 30 s poll: a pickup within a few seconds can only come from a NOTIFY heard on the LISTEN connection.
    stack = Stack(db_url, dispatcher_env={"DISPATCHER_POLL_INTERVAL_S": "30"}).start()
    try:
        with stack.connect() as conn:
            ws = worlds(conn, tmp_path, ONE_MESSAGE, 3)
        deadline = time.monotonic() + 15
        while not listener_pids(stack):
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.05)
        post_all(stack, ws[:1])
        assert stack.wait_job(ws[0].job_id, timeout=10)["status"] == "SUCCEEDED"
        for w in ws[1:]:
            [old] = listener_pids(stack)
            with stack.connect() as c:
                c.execute("SELECT pg_terminate_backend(%s)", (old,))
            deadline = time.monotonic() + 15
            while listener_pids(stack) in ([], [old]):
                assert time.monotonic() < deadline, f"the listener did not reconnect\n{stack.logs()}"
                time.sleep(0.05)
            time.sleep(1.0)  # past the sweep a reconnect triggers: only a NOTIFY can wake the claim loop now
            post_all(stack, [w])
            assert stack.wait_job(w.job_id, timeout=10)["status"] == "SUCCEEDED"
        assert stack.dispatchers[0].output().count("listen_connection_lost") == 2
    finally:
        stack.close()


# -- 6. Cancellation while running -------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["ws", "execute"])
def test_operator_cancel_of_a_running_invocation_ends_the_row_cancelled_and_relays_nothing_more(
    db_url: str, tmp_path: Path, transport: str
) -> None:
    # 15 s: long enough that the cancel command (a Python start-up, seconds on a loaded machine) comes mid-sleep.
    stack = Stack(db_url, dispatcher_env={"PISTON_TRANSPORT": transport, "AGENT_RUN_TIMEOUT_MS": "19000"}).start()
    try:
        with stack.connect() as conn:
            ws = worlds(conn, tmp_path, START_SLEEP_END.format(sleep=15), 1)
        w = ws[0]
        post_all(stack, ws)
        stack.wait_job(w.job_id, ("PROCESSING",), timeout=15)
        if transport == "ws":
            wait_messages(stack, ws, ["start"])
        else:  # the batch transport only relays at the end: wait for the program to run in the sandbox
            wait_until(stack.piston.busy, what="the agent to run in Piston", details=stack.logs)
        res = cli(stack.db_url, "cancel", w.job_id, "--reason", "user pressed stop")
        assert res.returncode == 0, res.stdout + res.stderr
        # The heartbeat (0.5 s) noticed and the runner stopped relaying: the row ends cancelled while the agent
        # is still in its 15 s sleep.
        wait_until(lambda: stack.outbox(w.job_id)["status"] == "cancelled", what="the row to end cancelled",
                   details=stack.logs)
        if transport == "execute":  # no stdin during a batch run: Piston has not ended (nor logged) it yet
            assert "status=" not in stack.piston.output(), f"the agent ended before the cancel took effect\n{stack.logs()}"
        job = stack.job(w.job_id)
        assert job["status"] == "CANCELLED" and job["errorMessage"] is None
        assert stack.outbox(w.job_id)["result"]["status"] == "STOPPED"
        # ws: the hub's cancel line ended the agent's process inside its 15 s sleep; execute: the agent goes on in
        # Piston (it cannot be killed there). Once it has ended (localpiston logs each job's end, and this stack
        # runs no other), its output must have gone nowhere.
        wait_until(lambda: "status=" in stack.piston.output(), what="the agent's run to end in Piston",
                   details=stack.logs)
        if transport == "ws":
            [wall_ms] = re.findall(r"status=\S+ wall=(\d+)ms", stack.piston.output())
            assert int(wall_ms) < 15000, f"the agent was not ended by the cancel line\n{stack.logs()}"
        expected = ["start"] if transport == "ws" else []
        assert stack.messages(w.session_id) == expected
        assert stack.job(w.job_id)["status"] == "CANCELLED"
    finally:
        stack.close()

