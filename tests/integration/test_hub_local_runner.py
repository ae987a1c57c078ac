"""`python -m hub run`: the agent author's local runner, behaving like the hub's sandbox.

call_llm is answered by the project's Gemini stand-in (fakegemini, a real HTTP server) through
google-genai, exactly as it would be by Gemini with GEMINI_BASE_URL unset.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dispatcher import bundle
from tests.fakegemini_proc import FakeGemini

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
