"""The SDK as agent authors get it: a wheel of hubpy/ installed into a fresh virtualenv.

The wheel is built with the project's pinned setuptools (no network: --no-build-isolation), then
installed with --no-index into a plain venv, so the test checks what `pip install ./hubpy` ships.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from tests.http_servers import LocalServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sdk")
    wheels = tmp / "wheels"
    source = tmp / "hubpy"  # a copy: setuptools writes build/ and *.egg-info next to the sources
    shutil.copytree(REPO / "hubpy", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps",
                    "--disable-pip-version-check", "-w", str(wheels), str(source)], check=True, timeout=120)
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)  # ensurepip is slow: the project's pip installs into it
    wheel = next(wheels.glob("agenthub_sdk-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "--quiet",
                    "--no-index", "--disable-pip-version-check", str(wheel)], check=True, timeout=120)
    return env_dir


def test_build_backend_pin_matches_the_setuptools_the_project_installs() -> None:
    requires = tomllib.loads((REPO / "hubpy" / "pyproject.toml").read_text())["build-system"]["requires"]
    pinned = (REPO / "requirements-dev.txt").read_text()
    match = re.search(r"^setuptools==(\S+)", pinned, re.M)
    assert match, "requirements-dev.txt must pin setuptools (the SDK's build backend)"
    assert requires == [f"setuptools=={match.group(1)}"]


def test_installed_sdk_imports_with_types_and_without_the_repo(sdk_venv: Path, tmp_path: Path) -> None:
    code = ("import hub, pathlib, json; p = pathlib.Path(hub.__file__).parent;"
            "print(json.dumps([str(p), (p / 'py.typed').is_file(), hub.get_prompt(), sorted(hub.__all__)[:3]]))")
    out = subprocess.run([str(sdk_venv / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True, timeout=60, env={"PATH": "/usr/bin:/bin"}).stdout
    assert "site-packages" in out and "true" in out
    assert '["HttpError", "HttpResponse", "HubError"]' in out


def test_installed_runner_runs_the_readme_demo_agent(sdk_venv: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(sdk_venv / "bin" / "python"), "-m", "hub", "run", str(REPO / "examples" / "demo_agent"), "--prompt", "hi",
         "--env", "GREETING=Howdy", "--user-var", "visits=2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "[message] Howdy! You said: hi" in proc.stdout
    assert "[message] This session has 1 message(s) so far; this is visit #3." in proc.stdout
    assert "[progress] 10% reading the conversation" in proc.stdout
    assert "[log info] demo agent answered visit 3" in proc.stdout
    assert 'user vars at the end: {"visits": "3"}' in proc.stderr


def test_installed_runner_makes_hub_http_calls_with_the_packages_own_rules(sdk_venv: Path, tmp_path: Path) -> None:
    """The rules hub.http follows locally (allow-lists, addresses, secrets) ship in the wheel, standard library only."""
    token = "tok-installed-0123456789"
    server = LocalServer("127.0.0.1")
    try:
        agent = tmp_path / "agent"
        agent.mkdir()
        (agent / "main.py").write_text(
            "import hub\n"
            f"r = hub.http('GET', {server.url('/echo')!r}, headers={{'Authorization': 'Bearer {{{{SECRET_T}}}}'}})\n"
            "hub.send_message(r.json()['headers']['Authorization'])\n"
            "try:\n    hub.http('GET', 'http://169.254.169.254/', timeout=2)\n"
            "except hub.HttpError as exc:\n    hub.send_message(exc.kind)\n")
        proc = subprocess.run(
            [str(sdk_venv / "bin" / "python"), "-m", "hub", "run", str(agent), "--prompt", "hi", "--env",
             "HUB_HTTP_ALLOW=127.0.0.1,169.254.169.254", "--secret", f"SECRET_T={token}", "--allow-host", "*",
             "--allow-private"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
        )
        seen = [r.headers.get("Authorization") for r in server.requests]
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    assert "[message] Bearer [redacted]\n[http] http call 2: GET 169.254.169.254/ failed (forbidden" in proc.stdout
    assert "[message] forbidden" in proc.stdout
    assert seen == [f"Bearer {token}"]
