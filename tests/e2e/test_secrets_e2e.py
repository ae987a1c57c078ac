"""An agent's secrets (its AgentEnvVar values) reach only its own sandbox.

Agents print, log, raise, exit with, forge protocol lines with and send their secrets in every way we
could think of, including across the edges of the windows we keep (stdout/stderr tails, long log lines,
the output cap). Then every process log, every table and both /metrics pages are searched for each
secret, and for any 12-character piece of one: nothing may be found.

Decided: ``hub.send_message(secret)`` and ``hub.set_user_var(k, secret)`` are the agent choosing to give
its user a value; those land in ChatMessage / UserVariable of that agent's own session unmasked (and
nowhere else). Logs, JobLog, Job.errorMessage/statusMessage and outbox rows are always masked.

Another agent must never see a secret: a snooper agent searches the sandbox host (/tmp, /proc) for the
secret of a victim agent that is running at the same moment.

A ``SECRET_*`` env var goes further: every agent here has one, which never enters its sandbox. One agent uses
it through hub.http against an echo server on loopback and does with the (masked) echo everything the others
do with their secrets; that value must be found nowhere, not even in the sending session's chat.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import requests

from tests import factories
from tests.http_servers import LocalServer
from tests.integration.localpiston_proc import free_port
from tests.stack import Stack, agent_with_code

HEX = uuid.uuid4().hex
API_KEY = f"sk-live-{HEX}"
QUOTED = f"p\"a's\\s-{HEX[:16]}"  # escaped differently by JSON, repr and plain text
VICTIM_SECRET = f"victim-{uuid.uuid4().hex}"
TOKEN = f"ingress-token-{uuid.uuid4().hex}"
WITHHELD = f"withheld/{uuid.uuid4().hex}+x"  # a SECRET_ env var: the agent can use it (hub.http), never read it
SECRETS = {"API_KEY": API_KEY, "QUOTED": QUOTED, "SECRET_TOKEN": WITHHELD, "HUB_HTTP_ALLOW": "127.0.0.1"}
# Agents that must still be running while the test looks wait for this file (the sandbox sees the host's
# /tmp), which the test creates once it has looked: no guess at how long the looking takes.
GO_FILE = Path("/tmp") / f"secrets-e2e-go-{uuid.uuid4().hex}"
WAIT_FOR_GO = f"import os, time\nwhile not os.path.exists({str(GO_FILE)!r}):\n    time.sleep(0.05)\n"
TAIL = 2000          # dispatcher/runner.py TAIL_CHARS
MAX_OUTPUT = 50_000  # MAX_OUTPUT_CHARS of this suite's dispatcher
FRAGMENT = 12        # any piece of a secret this long counts as a leak

HEAD = "import hub, json, sys, time\nS = hub.get_env_vars()\nK, Q = S['API_KEY'], S['QUOTED']\n"

LEAKERS: dict[str, str] = {
    "stdout": (
        "print('key', K, 'quoted', Q, json.dumps(Q), repr(Q))\n"
        f"sys.stdout.write('a' * 5000 + K + 'b' * ({TAIL} - 20))\n"  # the tail starts inside K
    ),
    "stderr": (
        "sys.stderr.write('key ' + K + ' ' + json.dumps({'q': Q}) + '\\n')\n"
        f"sys.stderr.write('a' * 5000 + K + 'b' * ({TAIL} - 20) + '\\n')\n"
    ),
    "hub.log": "hub.log('key ' + K)\nhub.log(Q, level='error')\nhub.log('z' * 3970 + K)\n",  # the 4000-char cut inside K
    "raises": "raise RuntimeError('bad key ' + K + ' ' + repr(Q))\n",
    "exits with it": "sys.exit(K)\n",
    "progress": "hub.set_progress(50, 'using ' + K)\nhub.send_message('progress set')\n" + WAIT_FOR_GO,
    "forged lines": (
        "P = '\\x1ehub:' + hub._context['nonce'] + ':'\n"
        "for obj in ({'type': K}, {'type': 'log', 'level': K, 'message': 'x'},"
        " {'type': 'call', 'id': 1, 'method': K, 'params': {}}, {'type': 'progress', 'percent': K}, {'type': Q}):\n"
        "    sys.stdout.write(P + json.dumps(obj) + '\\n')\n"
        "sys.stdout.flush()\n"
    ),
    "output cap cuts it": f"sys.stdout.write('x' * ({MAX_OUTPUT} - 20) + K)\nsys.stdout.flush()\ntime.sleep(5)\n",
    "sends it as a message": "hub.send_message('your key: ' + K)\nhub.set_user_var('key', K)\n",
    # ECHO: the echo server's URL, put before the code by the test.
    "uses a withheld secret": (
        "import os\n"
        "assert 'SECRET_TOKEN' not in S and not any('SECRET_' in k for k in os.environ)\n"
        "r = hub.http('POST', ECHO + '/echo', headers={'Authorization': 'Bearer {{SECRET_TOKEN}}'},"
        " params={'t': '{{SECRET_TOKEN}}'}, json={'token': '{{SECRET_TOKEN}}'})\n"
        "seen = [r.text, json.dumps(r.headers), r.url]\n"
        "for root, dirs, files in os.walk(os.getcwd()):\n"
        "    for name in files:\n"
        "        seen.append(open(os.path.join(root, name), encoding='utf-8', errors='replace').read())\n"
        "seen.append(open('/proc/self/environ', 'rb').read().decode('utf-8', 'replace'))\n"
        "everything = '\\n'.join(seen)\n"
        "print(r.text)\nsys.stderr.write(r.text + '\\n')\nhub.log(r.text)\n"
        "hub.send_message(everything[:50000])\nhub.set_user_var('echo', r.text)\nhub.set_progress(60, r.text[:200])\n"
        "try:\n    hub.http('GET', ECHO + '/status?code=500&t={{SECRET_TOKEN}}', timeout=0.000001)\n"
        "except hub.HttpError as exc:\n    hub.log(str(exc))\n"
        "hub.http('GET', ECHO + '/x/{{SECRET_TOKEN}}/y')  # a secret in the path: logged as its placeholder\n"
        "raise RuntimeError(r.text[-200:])\n"
    ),
}
EXPECTED_STATUS = {"raises": "FAILED", "exits with it": "FAILED", "output cap cuts it": "FAILED",
                   "uses a withheld secret": "FAILED"}

VICTIM = "import hub\nhub.send_message('victim ready')\n" + WAIT_FOR_GO

SNOOPER = """
import json, os, hub
needle = NEEDLE.encode()
found, scanned, denied = [], 0, 0
own_box = os.path.dirname(os.getcwd()) + os.sep  # its own main.py holds NEEDLE
def look(path):
    global scanned, denied
    if path.startswith(own_box):
        return
    try:
        with open(path, "rb") as fh:
            data = fh.read(1_000_000)
    except OSError:
        denied += 1
        return
    scanned += 1
    if needle in data:
        found.append(path)
import glob
# Where sandboxes live (every localpiston's boxes) and shared scratch space.
for root in glob.glob("/tmp/localpiston*") + ["/dev/shm", "/var/tmp"]:
    for folder, dirs, files in os.walk(root, onerror=lambda e: globals().__setitem__("denied", denied + 1)):
        for name in files:
            look(os.path.join(folder, name))
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for name in ("environ", "cmdline"):
            look(f"/proc/{pid}/{name}")
hub.send_message(json.dumps({"found": found, "scanned": scanned, "denied": denied,
                             "own_env": sorted(hub.get_env_vars())}))
"""


@dataclass
class Run:
    name: str
    world: factories.World


@pytest.fixture(scope="module")
def echo() -> Iterator[LocalServer]:
    server = LocalServer("127.0.0.1")
    yield server
    server.close()


@pytest.fixture(scope="module")
def stack(module_db_url: str) -> Iterator[Stack]:
    metrics_port = free_port()
    s = Stack(
        module_db_url,
        web_env={"INGRESS_TOKEN": TOKEN},
        dispatcher_env={
            "PISTON_TRANSPORT": "ws",
            "DISPATCHER_CONCURRENCY": "16",
            "MAX_OUTPUT_CHARS": str(MAX_OUTPUT),
            "DISPATCHER_METRICS_PORT": str(metrics_port),
            "LOG_LEVEL": "debug",
            "AGENT_RUN_TIMEOUT_MS": "20000",  # the agents waiting for GO_FILE: Piston's limit in tests.stack
            "HUB_HTTP_ALLOW_HOSTS": "127.0.0.1",
            "HUB_HTTP_ALLOW_PRIVATE": "1",
        },
    ).start()
    s.metrics_port = metrics_port  # type: ignore[attr-defined]
    yield s
    s.close()
    GO_FILE.unlink(missing_ok=True)


def test_secrets_never_reach_logs_tables_or_metrics_nor_another_agent(
    stack: Stack, echo: LocalServer, tmp_path: Path
) -> None:
    runs: list[Run] = []
    with stack.connect() as conn:
        for name, body in LEAKERS.items():
            code = f"ECHO = {echo.url('')!r}\n" + HEAD + body
            runs.append(Run(name, agent_with_code(conn, tmp_path, code, env=SECRETS, prompt=name)))
        victim = agent_with_code(conn, tmp_path, VICTIM, env={"VICTIM_SECRET": VICTIM_SECRET}, prompt="victim")
        snooper = agent_with_code(conn, tmp_path, f"NEEDLE = {VICTIM_SECRET!r}\n" + SNOOPER,
                                  env={"SNOOPER_OWN": "snooper-own-value"}, prompt="snooper")
    for run in runs:
        assert stack.post(run.world).status_code == 202
    assert stack.post(victim).status_code == 202

    # While the progress leaker sleeps, its status message is visible to the hub's UI: masked.
    progress = next(r for r in runs if r.name == "progress")
    wait_for_message(stack, progress.world.session_id, "progress set")
    status_message = stack.job(progress.world.job_id)["statusMessage"] or ""
    assert API_KEY not in status_message and "[redacted]" in status_message, status_message

    # The snooper runs while the victim's sandbox (with hub.py and its embedded context) exists.
    wait_for_message(stack, victim.session_id, "victim ready")
    assert stack.post(snooper).status_code == 202
    snoop_job = stack.wait_job(snooper.job_id, timeout=60)
    assert snoop_job["status"] == "SUCCEEDED", f"{snoop_job['errorMessage']}\n{stack.logs()}"
    report = json.loads(stack.messages(snooper.session_id)[0])
    assert report["found"] == [], report
    assert report["own_env"] == ["SNOOPER_OWN"]
    assert report["scanned"] > 0 and report["denied"] > 0, report  # it really looked, and was refused somewhere
    assert stack.job(victim.job_id)["status"] == "PROCESSING"  # the victim was running all along
    GO_FILE.touch()  # the progress leaker and the victim may finish now

    for run in runs:
        job = stack.wait_job(run.world.job_id, timeout=60)
        assert job["status"] == EXPECTED_STATUS.get(run.name, "SUCCEEDED"), (run.name, job["errorMessage"], stack.logs())
    assert stack.wait_job(victim.job_id, timeout=60)["status"] == "SUCCEEDED"

    # Masking happened (rather than the values never being written at all).
    raised = next(r for r in runs if r.name == "raises")
    assert "RuntimeError: bad key [redacted]" in (stack.job(raised.world.job_id)["errorMessage"] or "")
    logged = [e["message"] for e in stack.job_logs(next(r for r in runs if r.name == "hub.log").world.job_id)]
    assert "agent: key [redacted]" in logged and "agent: [redacted]" in logged, logged
    # The withheld secret was used: the echo server got it in the POST (header, query, body) and in a path.
    user = next(r for r in runs if r.name == "uses a withheld secret")
    [sent] = [r for r in echo.requests if r.method == "POST"]
    assert sent.headers["Authorization"] == f"Bearer {WITHHELD}" and json.loads(sent.body) == {"token": WITHHELD}
    assert [r.path for r in echo.requests if r.method == "GET"] == [f"/x/{WITHHELD}/y"]  # as written: nothing encodes a path
    http_lines = [e["message"] for e in stack.job_logs(user.world.job_id) if e["message"].startswith("http call")]
    assert http_lines[0].startswith("http call 1: POST 127.0.0.1/echo -> 200, "), http_lines
    assert http_lines[2].startswith("http call 3: GET 127.0.0.1/x/{{SECRET_TOKEN}}/y -> 200, "), http_lines

    secrets = [API_KEY, QUOTED, json.dumps(QUOTED)[1:-1], repr(QUOTED)[1:-1], VICTIM_SECRET, TOKEN, WITHHELD,
               quote(WITHHELD, safe=""), quote(WITHHELD)]
    with stack.connect() as conn:
        for where, text in everything_stored(conn):
            assert_no_secret(where, text, secrets)
        # The agent's own choice: its message and user variable, in its own session only.
        sender = next(r for r in runs if r.name == "sends it as a message")
        carrying = conn.execute(
            'SELECT DISTINCT "sessionId" FROM "ChatMessage" WHERE strpos("content", %s) > 0 '
            'UNION SELECT DISTINCT "sessionId" FROM "UserVariable" WHERE strpos("value", %s) > 0 '
            "UNION SELECT DISTINCT session_id FROM agent_hub.feed_event "
            "WHERE kind IN ('message', 'delta') AND strpos(payload::text, %s) > 0",
            (API_KEY, API_KEY, API_KEY),
        ).fetchall()
        # (The withheld secret's user also sent its visible ones: the dump of its box, context file included.)
        givers = {sender.world.session_id, user.world.session_id}
        assert {c["sessionId"] for c in carrying} == givers, carrying
        sources = {  # where: what an agent gave its user, as (value, session) rows
            "ChatMessage.content": 'SELECT "content" AS v, "sessionId" AS s FROM "ChatMessage"',
            "UserVariable.value": 'SELECT "value" AS v, "sessionId" AS s FROM "UserVariable"',
            "feed_event (message, delta)": "SELECT payload::text AS v, session_id AS s FROM agent_hub.feed_event "
                                           "WHERE kind IN ('message', 'delta')",
        }
        for where, sql in sources.items():
            for row in conn.execute(sql).fetchall():
                if row["s"] not in givers:
                    assert_no_secret(where, row["v"], secrets)
                # A withheld secret is not the agent's to give: in no session at all, the sender's included.
                assert_no_secret(where, row["v"], [WITHHELD, quote(WITHHELD, safe="")])
        dump = stack.messages(user.world.session_id)[0]
        assert '"nonce"' in dump and "Bearer [redacted]" in dump  # it read its context file and the echo

    logs = {f"dispatcher {i}": d.output() for i, d in enumerate(stack.dispatchers)}
    assert stack.web is not None
    logs["web"] = stack.web.output()
    logs["piston"] = stack.piston.output()
    logs["web /metrics"] = requests.get(stack.web_url + "/metrics", headers=stack.auth_headers, timeout=10).text
    port = stack.metrics_port  # type: ignore[attr-defined]
    logs["dispatcher /metrics"] = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert "run_started" in logs["dispatcher 0"] or "piston_run_start" in logs["dispatcher 0"]  # real, non-empty logs
    for where, text in logs.items():
        assert_no_secret(where, text, secrets)


def wait_for_message(stack: Stack, session_id: str, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in stack.messages(session_id):
        assert time.monotonic() < deadline, f"no message {text!r}\n{stack.logs()}"
        time.sleep(0.05)


def everything_stored(conn: psycopg.Connection) -> Iterator[tuple[str, str]]:
    """Every row of every table as JSON text, except the ones that hold what an agent chose to give its user
    (ChatMessage, UserVariable: checked separately) and AgentEnvVar, where the secrets live."""
    tables = conn.execute(
        "SELECT format('%I.%I', table_schema, table_name) AS name FROM information_schema.tables "
        "WHERE table_schema IN ('public', 'agent_hub') AND table_type = 'BASE TABLE'"
    ).fetchall()
    names = sorted(t["name"] for t in tables)
    assert {'public."Job"', 'public."JobLog"', "agent_hub.invocation_outbox", "agent_hub.invocation_outbox_event"} <= set(names)
    for name in names:
        if name in ('public."AgentEnvVar"', 'public."ChatMessage"', 'public."UserVariable"'):
            continue
        # The feed's message and delta events carry a ChatMessage's text to its session's stream: checked with it.
        only = " WHERE t.kind NOT IN ('message', 'delta')" if name == "agent_hub.feed_event" else ""
        for row in conn.execute(f"SELECT row_to_json(t)::text AS j FROM {name} t{only}").fetchall():
            # Both the JSON text and every string in it as stored (row_to_json escapes quotes and backslashes).
            yield name, row["j"] + "\n" + "\n".join(strings(json.loads(row["j"])))


def strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def assert_no_secret(where: str, text: str, secrets: list[str]) -> None:
    for secret in secrets:
        pieces = {secret[i:i + FRAGMENT] for i in range(max(1, len(secret) - FRAGMENT + 1))}
        leaked = [p for p in pieces if p in text]
        assert not leaked, f"{where} holds (part of) a secret {leaked[:3]}: ...{context(text, leaked[0])}..."


def context(text: str, piece: str) -> str:
    at = text.find(piece)
    return text[max(0, at - 80): at + 80]
