"""Hostile agents against the real processes: each ends with its expected Job state and a clear reason,
and a normal agent on another session succeeds while they run.

All hostile agents are queued at once (the dispatcher runs them side by side), then a normal agent is
queued; the test waits for everything and checks each case as a subtest. Sandbox limits come from
localpiston: RLIMIT_NPROC per job uid (fork bomb), a cgroup memory limit (memory bomb), a network
namespace (network). A case whose isolation this machine's localpiston lacks is skipped, not faked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests import factories
from tests.stack import Stack, agent_with_code

RUN_TIMEOUT_S = 6
MAX_MESSAGES = 50
MAX_OUTPUT_CHARS = 1_000_000
MAX_MESSAGE_CHARS = 10_000
MEMORY_LIMIT = 100_000_000
FILES_MAX_BYTES = 20_000
FILES_MAX_COUNT = 5
TOKEN = "hostile-suite-token-0123456789"

NORMAL = "import hub\nhub.send_message('normal agent answered: ' + hub.get_prompt())\n"

INFINITE_LOOP = "while True:\n    pass\n"

FORK_BOMB = """
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.05)  # at the process limit: keep trying, without burning the machine's CPU
"""

MEMORY_BOMB = """
hoard = []
while True:
    hoard.append(b"m" * 10_000_000)  # bytes() writes its pages, so they really count
"""

HUNDRED_MB_OUTPUT = """
import sys
chunk = "y" * 999_999 + "\\n"
for _ in range(100):
    sys.stdout.write(chunk)
sys.stdout.flush()
"""

TEN_THOUSAND_MESSAGES = """
import hub
for i in range(10_000):
    hub.send_message(f"spam {i}")
"""

OVERSIZED_MESSAGE = f"import hub\nhub.send_message('x' * {MAX_MESSAGE_CHARS * 2})\n"

BINARY_GARBAGE = """
import os, random, hub
rng = random.Random(7)
garbage = bytes(rng.randrange(256) for _ in range(200_000))
os.write(1, garbage + b"\\x00\\xff\\xfe\\n")
os.write(2, garbage[:3000] + b"\\x00\\xc3\\x28 stderr garbage\\n")
hub.send_message("after the garbage")
"""

# Lines an agent can forge by hand. With the run's real nonce (the agent can read it) they reach the
# decoder, which must reject each with a JobLog warning; with a guessed nonce they are plain output.
FORGED_LINES = """
import json, sys, hub
nonce = hub._context["nonce"]
P = "\\x1ehub:" + nonce + ":"
bad = [
    P + '{"type":"message","content":123}',
    P + '{"type":"message"}',
    P + '{"type":"progress","percent":"50"}',
    P + '{"type":"progress","percent":1e999}',
    P + '{"type":"progress","percent":-5}',
    P + '{"type":"user_var","key":"","value":"v"}',
    P + '{"type":"user_var","key":["k"],"value":"v"}',
    P + '{"type":"log","level":"fatal","message":"x"}',
    P + '{"type":"no_such_type"}',
    P + '[1, 2, 3]',
    P + '"just a string"',
    P + '{not json',
    P + 'NaN',
    P + '[' * 200_000,
    P + '{"type":"call","id":"seven","method":"call_llm","params":{}}',
    P + '{"type":"call","id":7,"method":"rm -rf /","params":{}}',
    P + json.dumps({"type": "message", "content": "y" * 20_000}),
]
forged = [
    "\\x1ehub:0123456789abcdef:" + json.dumps({"type": "message", "content": "forged: guessed nonce"}),
    "\\x1ehub:" + json.dumps({"type": "message", "content": "forged: no nonce"}),
    "  " + P + json.dumps({"type": "message", "content": "forged: marker not at line start"}),
]
for line in bad + forged:
    sys.stdout.write(line + "\\n")
sys.stdout.write(P + '{"type":"message","content":"nul \\\\u0000 inside"}\\n')
sys.stdout.flush()
print("forged", len(bad), flush=True)
hub.send_message("still alive")
"""
FORGED_BAD_LINES = 17

TEN_MB_LINE = """
import sys, time
sys.stdout.write("z" * 10_000_000)
sys.stdout.flush()
time.sleep(30)
"""

TEN_MB_PROTOCOL_LINE = """
import sys, time, hub
sys.stdout.write("\\x1ehub:" + hub._context["nonce"] + ':{"type":"message","content":"' + "z" * 10_000_000)
sys.stdout.flush()
time.sleep(30)
"""

READS_PROC = """
import json, os, hub
needles = [n.encode() for n in NEEDLES]
found, readable, denied = [], 0, 0
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    for name in ("environ", "cmdline", "maps"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as fh:
                data = fh.read()
        except OSError:
            denied += 1
            continue
        readable += 1
        found += [f"{pid}/{name}" for n in needles if n in data]
status = open("/proc/self/status").read()
hub.send_message(json.dumps({"found": found, "readable": readable, "denied": denied, "own_status": "Uid:" in status}))
"""

NETWORK_CAUGHT = """
import json, socket, hub
results = {}
for name, family, address in TARGETS:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            s.connect(address)
        results[name] = "CONNECTED"
    except OSError as exc:
        results[name] = "blocked: " + type(exc).__name__
try:
    socket.getaddrinfo("example.com", 443)
    results["dns"] = "RESOLVED"
except OSError as exc:
    results["dns"] = "blocked: " + type(exc).__name__
hub.send_message(json.dumps(results, sort_keys=True))
"""

NETWORK_UNCAUGHT = "import socket\nsocket.create_connection(('1.1.1.1', 443), timeout=3)\n"


@dataclass
class Case:
    name: str
    code: str
    status: str
    reason: str | None = None  # a substring of Job.errorMessage
    needs: str | None = None   # isolation the localpiston start-up line must report
    extra_files: dict[str, str] = field(default_factory=dict)
    world: factories.World | None = None
    job: dict[str, Any] = field(default_factory=dict)


def cases(stack: Stack, db_url: str) -> list[Case]:
    pg_targets: list[tuple[str, str, object]] = [("postgres_tcp", "socket.AF_INET", ("127.0.0.1", 5432))]
    if "host=/" in db_url:  # the embedded Postgres listens on a unix socket in its private data dir
        folder = db_url.split("host=", 1)[1].split("&", 1)[0]
        pg_targets.append(("postgres_unix", "socket.AF_UNIX", f"{folder}/.s.PGSQL.5432"))
    targets = [("web", "socket.AF_INET", ("127.0.0.1", stack.web_port)),
               ("piston", "socket.AF_INET", ("127.0.0.1", int(stack.piston.url.rsplit(":", 1)[1]))),
               ("outside", "socket.AF_INET", ("1.1.1.1", 443)), *pg_targets]
    targets_src = "TARGETS = [" + ", ".join(f"({n!r}, {fam}, {addr!r})" for n, fam, addr in targets) + "]\n"
    needles = [db_url, TOKEN, "DATABASE_URL="]
    return [
        Case("infinite loop", INFINITE_LOOP, "FAILED", f"timed out after {RUN_TIMEOUT_S} s"),
        Case("fork bomb", FORK_BOMB, "FAILED", f"timed out after {RUN_TIMEOUT_S} s", needs="per-job uid"),
        Case("memory bomb", MEMORY_BOMB, "FAILED", "memory limit", needs="memory: cgroup"),
        Case("100 MB of output", HUNDRED_MB_OUTPUT, "FAILED", f"limit of {MAX_OUTPUT_CHARS} characters (MAX_OUTPUT_CHARS)"),
        Case("10,000 messages", TEN_THOUSAND_MESSAGES, "FAILED", f"more than {MAX_MESSAGES} messages (MAX_MESSAGES_PER_RUN)"),
        Case("oversized message", OVERSIZED_MESSAGE, "FAILED", f"over the hub's limit of {MAX_MESSAGE_CHARS}"),
        Case("binary garbage", BINARY_GARBAGE, "SUCCEEDED"),
        Case("forged protocol lines", FORGED_LINES, "SUCCEEDED"),
        Case("10 MB line without newline", TEN_MB_LINE, "FAILED", "(MAX_OUTPUT_CHARS)"),
        Case("10 MB protocol line", TEN_MB_PROTOCOL_LINE, "FAILED", "(MAX_OUTPUT_CHARS)"),
        Case("reads /proc", f"NEEDLES = {needles!r}\n" + READS_PROC, "SUCCEEDED"),
        Case("network, caught", "import socket\n" + targets_src + NETWORK_CAUGHT, "SUCCEEDED", needs="netns"),
        Case("network, uncaught", NETWORK_UNCAUGHT, "FAILED", "Network is unreachable", needs="netns"),
        Case("files over the size cap", "print('hi')\n" + "#" * FILES_MAX_BYTES, "FAILED", "over the size cap"),
        Case("too many files", "print('hi')\n", "FAILED", f"over the limit of {FILES_MAX_COUNT}",
             extra_files={f"mod{i}.py": "x = 1\n" for i in range(FILES_MAX_COUNT)}),
    ]


@pytest.fixture(scope="module")
def stack(module_db_url: str) -> Iterator[Stack]:
    s = Stack(
        module_db_url,
        web_env={"INGRESS_TOKEN": TOKEN},
        dispatcher_env={
            "PISTON_TRANSPORT": "ws",
            "DISPATCHER_CONCURRENCY": "20",
            "AGENT_RUN_TIMEOUT_MS": str(RUN_TIMEOUT_S * 1000),
            "AGENT_RUN_MEMORY_LIMIT": str(MEMORY_LIMIT),
            "MAX_MESSAGES_PER_RUN": str(MAX_MESSAGES),
            "MAX_OUTPUT_CHARS": str(MAX_OUTPUT_CHARS),
            "MAX_MESSAGE_CHARS": str(MAX_MESSAGE_CHARS),
            "AGENT_FILES_MAX_BYTES": str(FILES_MAX_BYTES),
            "AGENT_FILES_MAX_COUNT": str(FILES_MAX_COUNT),
        },
    ).start()
    yield s
    s.close()


def test_hostile_agents_fail_with_a_clear_reason_while_a_normal_agent_still_succeeds(
    stack: Stack, module_db_url: str, tmp_path: Path, subtests: Any
) -> None:
    isolation = stack.piston.output()
    todo = cases(stack, module_db_url)
    with stack.connect() as conn:
        for case in todo:
            case.world = agent_with_code(conn, tmp_path, case.code, extra_files=case.extra_files, prompt=case.name)
        for case in todo:
            assert case.world is not None
            resp = stack.post(case.world)
            assert resp.status_code == 202, resp.text
        # The normal agent goes in once the slow hostile ones are running.
        slow = [c for c in todo if c.name in ("infinite loop", "fork bomb")]
        for case in slow:
            assert case.world is not None
            stack.wait_job(case.world.job_id, statuses=("PROCESSING", "SUCCEEDED", "FAILED", "CANCELLED"))
        normal = agent_with_code(conn, tmp_path, NORMAL, prompt="are you there?")
    assert stack.post(normal).status_code == 202
    normal_job = stack.wait_job(normal.job_id, timeout=60)
    for case in todo:
        assert case.world is not None
        case.job = stack.wait_job(case.world.job_id, timeout=90)

    with subtests.test("normal agent succeeds while hostile ones run"):
        assert normal_job["status"] == "SUCCEEDED", f"{normal_job['errorMessage']}\n{stack.logs()}"
        assert stack.messages(normal.session_id) == ["normal agent answered: are you there?"]
        for case in slow:
            assert normal_job["completedAt"] < case.job["completedAt"], (case.name, normal_job, case.job)

    for case in todo:
        with subtests.test(case.name):
            if case.needs and case.needs not in isolation:
                pytest.skip(f"localpiston here lacks {case.needs!r}: {isolation.splitlines()[:1]}")
            job = case.job
            assert job["status"] == case.status, f"{case.name}: {job['status']} {job['errorMessage']!r}"
            if case.reason is not None:
                assert case.reason in (job["errorMessage"] or ""), f"{case.name}: {job['errorMessage']!r}"
            else:
                assert job["errorMessage"] is None
            assert stack.outbox(job["id"])["attempts"] == 1  # agent faults are never retried
            check_details(stack, case)

    with subtests.test("every process is still up"):
        assert all(d.alive() for d in stack.dispatchers) and stack.web is not None and stack.web.alive()
        assert "Traceback" not in "".join(d.output() for d in stack.dispatchers), stack.logs()


def check_details(stack: Stack, case: Case) -> None:
    """What each case must (not) have left in the hub's tables, beyond the Job's state."""
    assert case.world is not None
    sid, job_id = case.world.session_id, case.world.job_id
    msgs = stack.messages(sid)
    logs = [entry["message"] for entry in stack.job_logs(job_id)]
    match case.name:
        case "10,000 messages":
            assert msgs == [f"spam {i}" for i in range(MAX_MESSAGES)]
        case "binary garbage":
            assert msgs == ["after the garbage"]
            assert any("stderr garbage" in m for m in logs), logs
        case "forged protocol lines":
            assert msgs == ["nul \ufffd inside", "still alive"]
            assert stack.outbox(job_id)["result"]["protocol_errors"] == FORGED_BAD_LINES
            assert sum("ignored a malformed hub line" in m for m in logs) == FORGED_BAD_LINES, (logs, stack.logs())
            assert stack.job(job_id)["progress"] == 100  # no bad progress line was applied before the end
            with stack.connect() as c:
                assert c.execute('SELECT count(*) AS n FROM "UserVariable" WHERE "sessionId" = %s', (sid,)).fetchone() == {"n": 0}
        case "reads /proc":
            report = json.loads(msgs[0])
            assert report["own_status"], report
            # A command line is world-readable by the kernel's design, and localpiston (unlike Piston's
            # isolate) has no PID namespace: a secret in a process's argv elsewhere on the host (e.g. a
            # shell started as `bash -c 'DATABASE_URL=… make test'`) is not ours to judge. Ours are this
            # test's descendants (web, dispatcher, localpiston, the sandboxes): none may carry one, and no
            # process's environment or memory map may be readable with one.
            ours = {str(p.pid) for p in psutil.Process(os.getpid()).children(recursive=True)}
            leaks = [f for f in report["found"] if not f.endswith("/cmdline") or f.split("/")[0] in ours]
            assert leaks == [], report
        case "network, caught":
            report = json.loads(msgs[0])
            assert report and all(v.startswith("blocked") for v in report.values()), report
        case "files over the size cap" | "too many files":
            assert msgs == [] and stack.outbox(job_id)["result"] in (None, {}, {"attempts": 1})
        case _:
            assert msgs == [], msgs
