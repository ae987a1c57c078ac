"""End to end: hub.http from real agent code in localpiston, through the real dispatcher, to HTTP servers on
loopback addresses (the operator allows them with HUB_HTTP_ALLOW_PRIVATE=1, as in development).

Three servers: the agent's API on 127.0.0.1, one on 127.0.0.2 (the agent allows it, the hub does not) and one
on 127.0.0.3 (the hub allows it, the agent does not). Each records what it received, so "nothing is sent" is
checked where it would arrive. 169.254.169.254 is on both allow-lists and still refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import requests

from tests import factories
from tests.http_servers import LocalServer
from tests.integration.localpiston_proc import free_port
from tests.stack import Stack, agent_with_code

TOKEN = "tok/e2e+Zq9-5c1d2e3f4a5b"  # "/" and "+" change under percent-encoding: every echoed form is masked
MAX_CALLS = 6


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, LocalServer]]:
    started = {host: LocalServer(host) for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3")}
    yield started
    for server in started.values():
        server.close()


@pytest.fixture(scope="module")
def stack(module_db_url: str) -> Iterator[Stack]:
    metrics_port = free_port()
    s = Stack(module_db_url, dispatcher_env={
        "PISTON_TRANSPORT": "ws",
        "HUB_HTTP_ALLOW_HOSTS": "127.0.0.1,127.0.0.3,169.254.169.254",
        "HUB_HTTP_ALLOW_PRIVATE": "1",
        "HUB_HTTP_MAX_CALLS": str(MAX_CALLS),
        "DISPATCHER_METRICS_PORT": str(metrics_port),
        "LOG_LEVEL": "debug",
    }).start()
    s.metrics_port = metrics_port  # type: ignore[attr-defined]
    yield s
    s.close()


AGENT_ENV = {"HUB_HTTP_ALLOW": "127.0.0.1,127.0.0.2,169.254.169.254", "SECRET_API_TOKEN": TOKEN}

CALLS_THE_API = """
import json, os, hub
r = hub.http("GET", API + "/echo", headers={"Authorization": "Bearer {{SECRET_API_TOKEN}}"},
             params={"key": "{{SECRET_API_TOKEN}}", "job": hub.get_job_id()})
echo = r.json()
hub.send_message(json.dumps({"status": r.status, "ok": r.ok, "authorization": echo["headers"]["Authorization"],
                             "echoed_header": r.headers["x-echo-authorization"], "path": echo["path"]}))
# Everything the agent can see of itself: its env vars, its process environment, every file in its box.
hub.send_message("env_vars=" + json.dumps(hub.get_env_vars()))
hub.send_message("environ=" + json.dumps(dict(os.environ)))
with open("/proc/self/environ", "rb") as f:
    hub.send_message("proc=" + f.read().decode("utf-8", "replace"))
for root, dirs, files in os.walk(os.path.dirname(os.path.abspath(__file__))):
    for name in files:
        with open(os.path.join(root, name), "rb") as f:
            hub.send_message("file " + name + "=" + f.read().decode("utf-8", "replace"))
"""

REFUSED = """
import json, hub
kinds = []
for url in (OUTSIDE_HUB + "/x", OUTSIDE_AGENT + "/x", "http://169.254.169.254/latest/meta-data/"):
    try:
        hub.http("GET", url, headers={"Authorization": "Bearer {{SECRET_API_TOKEN}}"}, timeout=3)
        kinds.append("sent")
    except hub.HttpError as exc:
        kinds.append([exc.kind, exc.message])
hub.send_message(json.dumps(kinds))
"""

BAD_INPUT = """
import json, hub
kinds = []
for kwargs in ({"method": "TRACE", "url": API + "/echo"}, {"method": "GET", "url": "ftp://127.0.0.1/x"},
               {"method": "GET", "url": API + "/echo", "headers": {"X-A": "one\\r\\nX-Injected: yes"}},
               {"method": "GET", "url": API + "/echo", "headers": {"X-A": "{{SECRET_NOT_THERE}}"}},
               {"method": "POST", "url": API + "/echo", "json": {"when": object()}}):
    try:
        hub.http(**kwargs)
        kinds.append("sent")
    except hub.HttpError as exc:
        kinds.append([exc.kind, exc.message])
hub.send_message(json.dumps(kinds))
"""

OVER_THE_LIMIT = """
import json, hub
kinds = []
for i in range(LIMIT + 2):
    try:
        kinds.append(hub.http("GET", API + "/status?code=404").status)
    except hub.HttpError as exc:
        kinds.append(exc.kind)
hub.send_message(json.dumps(kinds))
"""


def run(stack: Stack, w: factories.World) -> dict:
    assert stack.post(w).status_code == 202
    job = stack.wait_job(w.job_id)
    assert job["status"] == "SUCCEEDED", f"{job['errorMessage']}\n{stack.logs()}"
    return job


def agent(hub_conn: psycopg.Connection, tmp_path: Path, servers: dict[str, LocalServer], code: str) -> factories.World:
    head = (f"API = {servers['127.0.0.1'].url('')!r}\nOUTSIDE_HUB = {servers['127.0.0.2'].url('')!r}\n"
            f"OUTSIDE_AGENT = {servers['127.0.0.3'].url('')!r}\nLIMIT = {MAX_CALLS}\n")
    return agent_with_code(hub_conn, tmp_path, head + code, env=AGENT_ENV)


def test_the_api_gets_the_secret_and_the_agent_only_ever_sees_it_masked(
    stack: Stack, servers: dict[str, LocalServer], hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent(hub_conn, tmp_path, servers, CALLS_THE_API)
    run(stack, w)
    # The server received the real value, in the header and (percent-encoded) in the query.
    [seen] = [r for r in servers["127.0.0.1"].requests if w.job_id in r.path]
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert f"key={quote(TOKEN, safe='')}" in seen.path
    # The agent got the response with the value masked wherever the server echoed it.
    msgs = stack.messages(w.session_id)
    answer = json.loads(msgs[0])
    assert answer["status"] == 200 and answer["ok"]
    assert answer["authorization"] == answer["echoed_header"] == "Bearer [redacted]"
    assert answer["path"].startswith("/echo?key=[redacted]&job=")
    # Not in its env vars, its environment or any file of its box (which it did read: hub.py, the context).
    assert json.loads(msgs[1].removeprefix("env_vars=")) == {"HUB_HTTP_ALLOW": AGENT_ENV["HUB_HTTP_ALLOW"]}
    files = {m.split("=", 1)[0] for m in msgs if m.startswith("file ")}
    assert {"file hub.py", "file _hub_context.json", "file main.py", "file _hub_launcher.py"} <= files
    assert any(m.startswith("environ=") and "PATH" in m for m in msgs)
    assert all(TOKEN not in m and '"SECRET_API_TOKEN"' not in m for m in msgs[1:])
    assert all(quote(TOKEN, safe="") not in m for m in msgs)
    # One JobLog line for the call, without the value; the run's result counts it.
    lines = [e["message"] for e in stack.job_logs(w.job_id) if e["message"].startswith("http call")]
    assert len(lines) == 1 and re.fullmatch(r"http call 1: GET 127\.0\.0\.1/echo -> 200, \d+ ms, \d+ bytes", lines[0])
    http = stack.outbox(w.job_id)["result"]["http"]
    assert (http["calls"], http["failed"], http["over_limit"]) == (1, 0, 0) and http["bytes"] > 0
    assert http["per_call"][0]["call"] == "GET 127.0.0.1/echo" and http["per_call"][0]["status"] == 200
    everything = [stack.logs(), json.dumps(stack.job_logs(w.job_id)), json.dumps(stack.outbox(w.job_id), default=str),
                  json.dumps(stack.job(w.job_id), default=str)]
    assert all(TOKEN not in text and quote(TOKEN, safe="") not in text for text in everything)
    metrics = requests.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10).text  # type: ignore[attr-defined]
    ok = re.search(r'^agenthub_http_calls_total\{outcome="ok"\} (\S+)$', metrics, re.M)
    size = re.search(r"^agenthub_http_response_bytes_total (\S+)$", metrics, re.M)
    assert ok and float(ok.group(1)) >= 1 and size and float(size.group(1)) >= http["bytes"]


def test_a_host_outside_either_allow_list_and_cloud_metadata_are_forbidden_and_nothing_is_sent(
    stack: Stack, servers: dict[str, LocalServer], hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent(hub_conn, tmp_path, servers, REFUSED)
    run(stack, w)
    outside_hub, outside_agent, metadata = json.loads(stack.messages(w.session_id)[0])
    assert outside_hub[0] == "forbidden" and "not a host this hub allows (HUB_HTTP_ALLOW_HOSTS)" in outside_hub[1]
    assert outside_agent[0] == "forbidden" and "not in the agent's HUB_HTTP_ALLOW" in outside_agent[1]
    # On both allow-lists and with HUB_HTTP_ALLOW_PRIVATE=1: still refused.
    assert metadata == ["forbidden", "169.254.169.254 is a cloud metadata address, which is never allowed"]
    assert servers["127.0.0.2"].requests == [] and servers["127.0.0.3"].requests == []
    lines = [e["message"] for e in stack.job_logs(w.job_id) if e["message"].startswith("http call")]
    assert len(lines) == 3 and all(" failed (forbidden: " in line for line in lines)
    assert stack.outbox(w.job_id)["result"]["http"]["kinds"] == {"forbidden": 3}


def test_bad_input_is_bad_request_saying_which_and_nothing_is_sent(
    stack: Stack, servers: dict[str, LocalServer], hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    before = len(servers["127.0.0.1"].requests)
    w = agent(hub_conn, tmp_path, servers, BAD_INPUT)
    run(stack, w)
    results = json.loads(stack.messages(w.session_id)[0])
    assert [r[0] for r in results] == ["bad_request"] * 5
    says = ["method 'TRACE' is not one of", "http:// or https:// URL, got ftp:", "contains a line break",
            "unknown secret {{SECRET_NOT_THERE}}", "json is not JSON-serialisable"]
    assert all(s in r[1] for s, r in zip(says, results, strict=True)), results
    assert len(servers["127.0.0.1"].requests) == before


def test_calls_over_hub_http_max_calls_get_kind_limit_and_an_http_error_status_is_a_response(
    stack: Stack, servers: dict[str, LocalServer], hub_conn: psycopg.Connection, tmp_path: Path
) -> None:
    w = agent(hub_conn, tmp_path, servers, OVER_THE_LIMIT)
    run(stack, w)
    assert json.loads(stack.messages(w.session_id)[0]) == [404] * MAX_CALLS + ["limit", "limit"]
    http = stack.outbox(w.job_id)["result"]["http"]
    assert (http["calls"], http["over_limit"]) == (MAX_CALLS, 2)
    logs = [e["message"] for e in stack.job_logs(w.job_id)]
    assert f"http call refused: over HUB_HTTP_MAX_CALLS ({MAX_CALLS}) for this run" in logs
