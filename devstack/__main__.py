"""`make run` — start the whole service locally.

    python -m devstack            start everything (Ctrl-C stops it all)
    python -m devstack new-job    queue a new demo prompt (like Next.js) and print its curl
    python -m devstack show       show the demo conversation and its latest Jobs

With DATABASE_URL unset an embedded Postgres is started in a fresh temporary folder (removed at exit:
every `make run` starts from an empty database);
with PISTON_URL unset the project's localpiston is started; with GEMINI_API_KEY (OPENAI_API_KEY) unset,
fakegemini (fakeopenai) answers hub.call_llm. hub.http may reach any host, loopback and private addresses
included (HUB_HTTP_ALLOW_HOSTS=*, HUB_HTTP_ALLOW_PRIVATE=1, unless set): this is a development stack. The Prisma
tables are created when absent (local only), migrations applied, and a demo agent seeded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import requests

from core import migrate
from core.db import connect
from core.sqlfiles import query
from devstack.embedded_pg import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
STATE = RUN_DIR / "devstack.json"
DEMO = {
    "user_id": "demo-user",
    "agent_id": "demo-agent",
    "session_id": "demo-session",
    "file_id": "demo-agent-main-py",
    "env_id": "demo-agent-greeting",
}
DEMO_AGENT = ROOT / "examples" / "demo_agent" / "main.py"


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"devstack: {proc.args!r} exited with {proc.returncode} during start-up")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"devstack: {url} did not answer within {timeout_s:g} s")


def _module(proc: subprocess.Popen[bytes]) -> str:
    """The module a child runs: each is started as ``[python, "-m", module, ...]``."""
    return str(proc.args[2]) if isinstance(proc.args, list) else str(proc.args)


def _database_url() -> tuple[str, EmbeddedPostgres | None]:
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        return url, None
    server = EmbeddedPostgres(prefix="agenthub-devstack-pg-").start()
    return server.url, server


def _seed(url: str) -> None:
    params = {**DEMO, "filepath": str(DEMO_AGENT), "filesize": DEMO_AGENT.stat().st_size}
    with connect(url) as conn:
        conn.execute(query("devstack/seed"), params)
        conn.execute(query("devstack/seed_files"), params)
        conn.commit()


def new_job(url: str, prompt: str) -> str:
    job_id = str(uuid.uuid4())
    with connect(url) as conn:
        conn.execute(
            query("devstack/new_turn"),
            {**DEMO, "job_id": job_id, "message_id": str(uuid.uuid4()), "prompt": prompt},
        )
        conn.commit()
    return job_id


def _curl(web: str, job_id: str, prompt: str) -> str:
    body = json.dumps({"sessionId": DEMO["session_id"], "jobId": job_id, "userId": DEMO["user_id"], "prompt": prompt})
    return (f"curl -s -X POST {web}/api/agents/{DEMO['agent_id']}/invoke "
            f"-H 'Content-Type: application/json' -d '{body}'")


def _state() -> dict[str, str]:
    if not STATE.exists():
        raise SystemExit("devstack: nothing is running here; start it with `make run`")
    return dict(json.loads(STATE.read_text()))


def cmd_new_job(prompt: str) -> int:
    st = _state()
    job_id = new_job(st["database_url"], prompt)
    print(_curl(st["web"], job_id, prompt))
    return 0


def cmd_show() -> int:
    st = _state()
    with connect(st["database_url"]) as conn:
        msgs = conn.execute(query("devstack/conversation"), DEMO).fetchall()
        jobs = conn.execute(query("devstack/jobs"), DEMO).fetchall()
    for m in msgs:
        print(f"{m['timestamp']:%H:%M:%S.%f}"[:-3] + f"  {m['role']:>5}: {m['content']}")
    print()
    for j in jobs:
        err = f"  error: {j['error']}" if j["error"] else ""
        print(f"job {j['id']}  {j['status']:<10} progress {j['progress']:.0f}%{err}")
    return 0


def cmd_up() -> int:
    url, server = _database_url()
    try:
        return _up(url)
    finally:
        if server is not None:
            server.close()


def _up(url: str) -> int:
    migrate.apply(url, prisma=True)
    _seed(url)
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": os.environ.get("LOG_FORMAT", "console")}
    # Only the dispatcher gets the LLM settings: web and Piston never see the keys.
    gemini = {k: env.pop(k) for k in ("GEMINI_API_KEY", "GEMINI_BASE_URL") if env.get(k)}
    openai = {k: env.pop(k) for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL") if env.get(k)}
    procs: list[subprocess.Popen[bytes]] = []
    py = sys.executable
    if not os.environ.get("PISTON_URL"):
        port = _free_port(2000)
        pist_env = {
            **env,
            # Agents talk to the dispatcher for their whole run: give them a minute, like an operator would.
            "PISTON_RUN_TIMEOUT": os.environ.get("PISTON_RUN_TIMEOUT", "60000"),
            "PISTON_RUN_CPU_TIME": os.environ.get("PISTON_RUN_CPU_TIME", "60000"),
            "PISTON_MAX_CONCURRENT_JOBS": os.environ.get("PISTON_MAX_CONCURRENT_JOBS", "8"),
        }
        procs.append(subprocess.Popen([py, "-m", "localpiston", "--host", "127.0.0.1", "--port", str(port)], env=pist_env))
        env["PISTON_URL"] = f"http://127.0.0.1:{port}"
        env.setdefault("AGENT_RUN_TIMEOUT_MS", "30000")
        _wait_http(f"{env['PISTON_URL']}/api/v2/runtimes", 20, procs[-1])
    llm_note = "Gemini" + (f" at {gemini['GEMINI_BASE_URL']}" if "GEMINI_BASE_URL" in gemini else "")
    if "GEMINI_API_KEY" not in gemini:
        # No key: a local stand-in answers hub.call_llm with canned text, so agents that use it still run.
        gemini_port = _free_port(8089)
        gemini = {"GEMINI_API_KEY": "fakegemini-" + uuid.uuid4().hex, "GEMINI_BASE_URL": f"http://127.0.0.1:{gemini_port}"}
        procs.append(subprocess.Popen([py, "-m", "fakegemini", "--host", "127.0.0.1", "--port", str(gemini_port)],
                                      env={**env, "FAKEGEMINI_API_KEY": gemini["GEMINI_API_KEY"]}))
        _wait_http(f"{gemini['GEMINI_BASE_URL']}/_control/health", 20, procs[-1])
        llm_note = (f"fakegemini at {gemini['GEMINI_BASE_URL']}: hub.call_llm answers are CANNED "
                    "(set GEMINI_API_KEY to use the real Gemini)")
    openai_note = "openai: models go to " + (openai.get("OPENAI_BASE_URL") or "OpenAI")
    if "OPENAI_API_KEY" not in openai:
        # Likewise for call_llm(model="openai:<name>"): canned answers from the OpenAI-compatible stand-in.
        openai_port = _free_port(8090)
        openai = {"OPENAI_API_KEY": "fakeopenai-" + uuid.uuid4().hex, "OPENAI_BASE_URL": f"http://127.0.0.1:{openai_port}/v1"}
        procs.append(subprocess.Popen([py, "-m", "fakeopenai", "--host", "127.0.0.1", "--port", str(openai_port)],
                                      env={**env, "FAKEOPENAI_API_KEY": openai["OPENAI_API_KEY"]}))
        _wait_http(f"http://127.0.0.1:{openai_port}/_control/health", 20, procs[-1])
        openai_note = (f"openai: models go to fakeopenai at {openai['OPENAI_BASE_URL']}: answers are CANNED "
                       "(set OPENAI_API_KEY, and OPENAI_BASE_URL for another endpoint, to use a real one)")
    # A development stack: hub.http may reach any host, and a test server on this machine (an agent still
    # needs its own HUB_HTTP_ALLOW env var).
    http = {"HUB_HTTP_ALLOW_HOSTS": env.get("HUB_HTTP_ALLOW_HOSTS") or "*",
            "HUB_HTTP_ALLOW_PRIVATE": env.get("HUB_HTTP_ALLOW_PRIVATE") or "1"}
    web_port = int(os.environ.get("PORT", "5000"))
    web = f"http://127.0.0.1:{web_port}"
    procs.append(subprocess.Popen([py, "-m", "ingress", "--host", "127.0.0.1", "--port", str(web_port)], env=env))
    procs.append(subprocess.Popen([py, "-m", "dispatcher", "run"], env={**env, **gemini, **openai, **http}))
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        _wait_http(f"{web}/readyz", 30, procs[-2])
        RUN_DIR.mkdir(exist_ok=True)
        STATE.write_text(json.dumps({"database_url": url, "web": web, "piston": env["PISTON_URL"]}))
        prompt = "Hi there, demo agent!"
        job_id = new_job(url, prompt)
        print("\n=== agent hub is up ===", flush=True)
        print(f"web: {web}   piston: {env['PISTON_URL']}   database: {url}")
        print(f"LLM: {llm_note}")
        print(f"     {openai_note}")
        print(f"hub.http: HUB_HTTP_ALLOW_HOSTS={http['HUB_HTTP_ALLOW_HOSTS']} "
              f"HUB_HTTP_ALLOW_PRIVATE={http['HUB_HTTP_ALLOW_PRIVATE']} (each agent also needs HUB_HTTP_ALLOW)")
        print("\nInvoke the demo agent (as the Next.js route would):\n")
        print(f"  {_curl(web, job_id, prompt)}\n")
        print("See its answer:              .venv/bin/python -m devstack show")
        print("Queue another prompt:        .venv/bin/python -m devstack new-job 'your prompt'")
        print("Stop everything:             Ctrl-C\n", flush=True)
        while not stopping:
            for p in procs:
                if p.poll() is not None:
                    print(f"devstack: {_module(p)} exited with {p.returncode}; stopping", file=sys.stderr)
                    stopping = True
            time.sleep(0.2)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        STATE.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if not args or args[0] == "up":
            return cmd_up()
        if args[0] == "new-job":
            return cmd_new_job(" ".join(args[1:]) or "Hello again!")
        if args[0] == "show":
            return cmd_show()
    except psycopg.OperationalError as exc:
        print(f"devstack: database unreachable: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
