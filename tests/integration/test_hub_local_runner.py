"""`python -m hub run`: the agent author's local runner, behaving like the hub's sandbox.

call_llm is answered by the project's Gemini stand-in (fakegemini, a real HTTP server) through
google-genai, exactly as it would be by Gemini with GEMINI_BASE_URL unset.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dispatcher import bundle
from tests.fakegemini_proc import FakeGemini
from tests.fakeopenai_proc import FakeOpenAI
from tests.http_servers import LocalServer, make_ca, serve

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hubpy"))
from hub import _local  # noqa: E402

KEY = "fake-key-for-local-runner"


@pytest.fixture(scope="module")
def fakegemini() -> Iterator[str]:
    server = FakeGemini(KEY).start()
    yield server.url
    server.close()


def hub_run(agent: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GEMINI_")}
    return subprocess.run([sys.executable, "-m", "hub", "run", str(agent), *args], cwd=agent.parent if agent.is_dir() else agent,
                          env={**base, "PYTHONPATH": str(REPO / "hubpy"), **(env or {})},
                          capture_output=True, text=True, timeout=60)


def write_agent(tmp: Path, files: dict[str, str]) -> Path:
    folder = tmp / "agent"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


LLM_AGENT = """
import hub
try:
    hub.send_message("llm: " + hub.call_llm("Say hi to " + hub.get_prompt(), system="Be brief.", history=True))
except hub.LLMError as exc:
    hub.send_message("llm error kind=" + exc.kind)
try:
    hub.call_agent("other-agent", {"q": 1})
except hub.HubError as exc:
    hub.send_message("agent error kind=" + str(exc.kind))
"""


def test_local_runner_answers_call_llm_through_gemini_at_gemini_base_url(fakegemini: str, tmp_path: Path) -> None:
    agent = write_agent(tmp_path, {"main.py": LLM_AGENT})
    proc = hub_run(agent, "--prompt", "Ada", env={"GEMINI_API_KEY": KEY, "GEMINI_BASE_URL": fakegemini})
    assert proc.returncode == 0, proc.stderr
    assert "[message] llm: [canned] gemini-2.5-flash answer" in proc.stdout
    assert "[message] agent error kind=not_available_locally" in proc.stdout
    assert "call_agent('other-agent') is not available locally" in proc.stderr
    sent = requests.get(fakegemini + "/_control/requests", timeout=5).json()
    assert any(r["status"] == 200 for r in (sent if isinstance(sent, list) else sent.get("requests", [])))


def test_local_runner_without_a_gemini_key_says_to_set_it(tmp_path: Path) -> None:
    agent = write_agent(tmp_path, {"main.py": LLM_AGENT})
    proc = hub_run(agent, "--prompt", "Ada")
    assert proc.returncode == 0, proc.stderr
    assert "[message] llm error kind=not_configured" in proc.stdout
    assert "set GEMINI_API_KEY" in proc.stderr


def test_local_runner_exits_with_the_agents_status_and_shows_its_traceback(tmp_path: Path) -> None:
    agent = write_agent(tmp_path, {"agent.py": "import hub, sys\nhub.send_message('before')\nraise ValueError('boom')\n",
                                   "helper.txt": "x"})
    proc = hub_run(agent, "--prompt", "x")
    assert proc.returncode == 1
    assert "[message] before" in proc.stdout
    assert "ValueError: boom" in proc.stderr and "_hub_launcher" not in proc.stderr
    exit3 = hub_run(write_agent(tmp_path / "b", {"solo.py": "import sys\nsys.exit(3)\n"}), "--prompt", "x")
    assert exit3.returncode == 3 and "agent exited with status 3" in exit3.stderr


def test_local_runner_passes_history_env_and_user_vars_like_the_hub(tmp_path: Path) -> None:
    code = ("import hub, json\nhub.send_message(json.dumps([[m['role'], m['content']] for m in hub.get_chat_history()]))\n"
            "hub.send_message(json.dumps([hub.get_env_vars(), hub.get_user_vars()], sort_keys=True))\n"
            "hub.set_user_var('seen', 'yes')\nprint('plain output')\n")
    agent = write_agent(tmp_path, {"main.py": code})
    history = tmp_path / "history.json"
    history.write_text('[{"role": "user", "content": "earlier"}, {"role": "agent", "content": "reply"}]')
    proc = hub_run(agent, "--prompt", "now", "--history", str(history), "--env", "K=v=1", "--user-var", "lang=fr")
    assert proc.returncode == 0, proc.stderr
    assert '[message] [["user", "earlier"], ["agent", "reply"], ["user", "now"]]' in proc.stdout
    assert '[message] [{"K": "v=1"}, {"lang": "fr"}]' in proc.stdout
    assert "plain output" in proc.stdout
    assert 'user vars at the end: {"lang": "fr", "seen": "yes"}' in proc.stderr


def test_local_runner_refuses_an_agent_without_entrypoint(tmp_path: Path) -> None:
    proc = hub_run(write_agent(tmp_path, {"a.py": "", "b.py": ""}), "--prompt", "x")
    assert proc.returncode == 2
    assert "no entrypoint: expected main.py, agent.py or a single .py file; found: a.py, b.py" in proc.stderr


def test_local_launcher_is_the_dispatchers_launcher() -> None:
    assert _local.launcher_source("pkg/main.py") == bundle.launcher_source("pkg/main.py")
    # The same box around it: hub.py as it is, the context as a JSON file of the same name beside it.
    assert (_local.HUB_NAME, _local.CONTEXT_NAME) == (bundle.HUB_NAME, bundle.CONTEXT_NAME)
    assert _local.hub_source() == bundle.hub_source()


# ---- hub.http and openai: models, locally (issue 15) ----------------------------------------------------

TOKEN = "tok/local+0123456789"

HTTP_AGENT = """
import json, os, hub
r = hub.http("GET", URL + "/echo", headers={"Authorization": "Bearer {{SECRET_API_TOKEN}}"}, params={"q": "x"})
hub.send_message(f"echo {r.status} {r.json()['headers']['Authorization']} {r.headers['x-echo-authorization']}")
for url in ("http://169.254.169.254/latest/meta-data/", "http://localhost:1/", URL.replace("127.0.0.1", "127.0.0.2")):
    try:
        hub.http("GET", url, timeout=2)  # 2 s: were a rule broken, the test fails fast
    except hub.HttpError as exc:
        hub.send_message(f"refused {exc.kind}")
try:
    hub.http("GET", URL, headers={"X": "{{SECRET_NONE}}"})
except hub.HttpError as exc:
    hub.send_message(f"refused {exc.kind}")
hub.send_message("env " + json.dumps(sorted(hub.get_env_vars())) + " " + str(any("SECRET" in k for k in os.environ)))
"""


@pytest.fixture
def echo() -> Iterator[LocalServer]:
    yield from serve("127.0.0.1")


def test_local_runner_makes_hub_http_calls_itself_with_the_hubs_rules(echo: LocalServer, tmp_path: Path) -> None:
    agent = write_agent(tmp_path, {"main.py": f"URL = {echo.url('')!r}\n" + HTTP_AGENT})
    proc = hub_run(agent, "--prompt", "go", "--env", "HUB_HTTP_ALLOW=127.0.0.1,169.254.169.254,localhost,127.0.0.2",
                   "--env", "SECRET_FROM_ENV=also-withheld", "--secret", f"SECRET_API_TOKEN={TOKEN}",
                   "--allow-host", "127.0.0.1", "--allow-host", "169.254.169.254", "--allow-private",
                   env={"SECRET_IN_SHELL": "not-for-the-agent"})
    assert proc.returncode == 0, proc.stderr
    assert "[message] echo 200 Bearer [redacted] Bearer [redacted]" in proc.stdout
    # metadata (never), localhost and 127.0.0.2 (not in --allow-host), an unknown secret (nothing sent)
    assert proc.stdout.count("[message] refused forbidden") == 3
    assert "[message] refused bad_request" in proc.stdout
    assert '[message] env ["HUB_HTTP_ALLOW"] False' in proc.stdout
    assert [r.headers["Authorization"] for r in echo.requests] == [f"Bearer {TOKEN}"]
    assert echo.requests[0].path == "/echo?q=x"
    assert "[http] http call 1: GET 127.0.0.1/echo -> 200, " in proc.stdout
    assert "[http] http call 2: GET 169.254.169.254/latest/meta-data/ failed (forbidden: " in proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr


def test_local_runner_hub_http_is_off_without_allow_host(echo: LocalServer, tmp_path: Path) -> None:
    code = (f"import hub\ntry:\n    hub.http('GET', {echo.url('/')!r})\n"
            "except hub.HttpError as exc:\n    hub.send_message(exc.kind)\n")
    proc = hub_run(write_agent(tmp_path, {"main.py": code}), "--prompt", "go", "--env", "HUB_HTTP_ALLOW=*",
                   "--allow-private")
    assert proc.returncode == 0, proc.stderr
    assert "[message] forbidden" in proc.stdout and "--allow-host" in proc.stdout
    assert echo.requests == []


@pytest.mark.parametrize(("args", "says"), [
    (["--secret", "API_TOKEN=x"], "a secret's name must start with SECRET_, got 'API_TOKEN'"),
    (["--allow-host", "https://api.example.com"], "--allow-host: 'https://api.example.com' is not a host pattern"),
])
def test_local_runner_refuses_a_bad_secret_name_or_host_pattern(tmp_path: Path, args: list[str], says: str) -> None:
    proc = hub_run(write_agent(tmp_path, {"main.py": "print('never runs')\n"}), "--prompt", "go", *args)
    assert proc.returncode == 2 and says in proc.stderr and "never runs" not in proc.stdout


def test_local_runner_answers_openai_models_through_the_openai_sdk(tmp_path: Path) -> None:
    key = "sk-local-" + "0123456789abcdef"
    fake = FakeOpenAI(key).start()
    try:
        code = ("import hub\nhub.send_message(hub.call_llm('hello ' + hub.get_prompt(), model='openai:gpt-4o-mini',"
                " system='Be brief.'))\n")
        proc = hub_run(write_agent(tmp_path, {"main.py": code}), "--prompt", "local-openai",
                       env={"OPENAI_API_KEY": key, "OPENAI_BASE_URL": fake.base_url})
        [seen] = fake.requests(containing="local-openai")
    finally:
        fake.close()
    assert proc.returncode == 0, proc.stderr
    assert "[message] [canned]" in proc.stdout
    assert seen["body"]["model"] == "gpt-4o-mini" and seen["body"]["messages"][0] == {"role": "system",
                                                                                       "content": "Be brief."}


def test_local_runner_speaks_tls_to_the_checked_address_verifying_the_urls_name(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, ["localhost"])
    server = LocalServer("127.0.0.1", tls=ca.context)
    try:
        code = f"""
import hub
for host in ("localhost", "127.0.0.1"):  # the certificate names localhost only
    try:
        r = hub.http("GET", "https://" + host + ":{server.port}/echo")
        hub.send_message(host + " " + str(r.status))
    except hub.HttpError as exc:
        hub.send_message(host + " " + exc.kind + " " + exc.message)
"""
        proc = hub_run(write_agent(tmp_path, {"main.py": code}), "--prompt", "tls", "--env", "HUB_HTTP_ALLOW=*",
                       "--allow-host", "*", "--allow-private", env={"SSL_CERT_FILE": str(ca.ca_file)})
        sni = list(server.state.sni)
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    assert "[message] localhost 200" in proc.stdout
    assert "[message] 127.0.0.1 unavailable TLS with 127.0.0.1 failed: the certificate was not accepted" in proc.stdout
    assert "localhost" in sni


class _Timed(io.StringIO):
    """An output stream that remembers when each piece was written."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.writes.append((time.time(), text))
        return super().write(text)


def test_local_runner_prints_a_streamed_answers_chunks_as_the_model_produces_them(fakegemini: str, tmp_path: Path) -> None:
    requests.post(fakegemini + "/_control/stream", json={"chunks": 4, "delay_ms": 200}, timeout=5).raise_for_status()
    agent = write_agent(tmp_path, {"main.py": 'import hub\nhub.send_message(hub.call_llm("stream to " + hub.get_prompt(), '
                                              'stream=True))\n'})
    out, err = _Timed(), io.StringIO()
    report = _local.run_agent(agent, prompt="Ada-local-stream", out=out, err=err,
                              llm_env={"GEMINI_API_KEY": KEY, "GEMINI_BASE_URL": fakegemini})
    assert report.exit_code == 0, err.getvalue()
    [text] = report.messages
    assert text.startswith("[canned]") and "Ada-local-stream" in text
    assert f"[message] {text}\n" in out.getvalue()
    sent = [r for r in requests.get(fakegemini + "/_control/requests", timeout=5).json()["requests"]
            if "Ada-local-stream" in json.dumps(r.get("body"))]
    [request] = sent
    chunk_times = request["chunk_sent_at"]
    assert len(chunk_times) == 4
    printed = [at for at, piece in out.writes if piece and piece in text and piece != text]
    assert len(printed) == 4  # one print per chunk, not one at the end
    assert printed[0] < chunk_times[-1]  # the first chunk was on screen before the model's last one was sent
