"""requirements.txt (all that Heroku/Dokku install) covers what the Procfile's processes import, and no more:
development and test tools live in requirements-dev.txt."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A fresh interpreter in which every installed distribution that requirements.txt does not pin is missing
# (its modules raise ModuleNotFoundError, as in production, so optional imports take their fallback), then
# what the Procfile's processes import: release (core.migrate), web (ingress, its ASGI app and the Hypercorn
# parts it loads at serve time), dispatcher (run and the operator commands), and the google-genai and openai
# clients and the hub.http broker a run builds.
# Prints {top-level module: [distributions]} for every module a distribution provides that got imported.
PROBE = r"""
import importlib, importlib.abc, importlib.metadata as md, json, re, sys

pinned = set(json.loads(sys.argv[1]))
owners = md.packages_distributions()
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()

class OnlyPinned(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        dists = owners.get(name.partition(".")[0])
        if dists and not any(norm(d) in pinned for d in dists):
            raise ModuleNotFoundError(f"No module named {name!r} in production: {dists} not in requirements.txt", name=name)
        return None

before = set(sys.modules)
sys.meta_path.insert(0, OnlyPinned())
for module in ("core.migrate", "ingress.__main__", "ingress.app", "ingress.asgi", "hypercorn.run", "hypercorn.config",
               "hypercorn.asyncio.run", "hypercorn.protocol.h11", "hypercorn.protocol.h2", "hypercorn.protocol.ws_stream",
               "dispatcher.__main__", "dispatcher.ops", "dispatcher.verify", "dispatcher.worker",
               "dispatcher.calls", "core.metrics",
               # call_llm's openai: provider and hub.http's broker (dispatcher.worker wires them in)
               "dispatcher.llm_openai", "dispatcher.httpcall.run"):
    importlib.import_module(module)
from dispatcher import gemini, llm_openai
from dispatcher.httpcall import broker as httpcall
from dispatcher.config import DispatcherConfig
gemini.GeminiClient(DispatcherConfig.from_env({"DATABASE_URL": "postgresql://probe@127.0.0.1:9/probe",
    "PISTON_URL": "http://127.0.0.1:9", "GEMINI_API_KEY": "probe-key", "GEMINI_BASE_URL": "http://127.0.0.1:9"})).warm()
from dispatcher.config import HttpSettings, LLMSettings, OpenAISettings
llm_openai.client_for(OpenAISettings.from_env({"OPENAI_API_KEY": "probe-key", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}),
                      LLMSettings.from_env({}))
httpcall.broker_for(HttpSettings.from_env({"HUB_HTTP_ALLOW_HOSTS": "*"}))
loaded = {name.partition(".")[0] for name in set(sys.modules) - before}
print(json.dumps({top: sorted(norm(d) for d in owners[top]) for top in sorted(loaded) if top in owners}))
"""

# Tools that must never reach production (besides everything requirements-dev.in names).
KNOWN_DEV_TOOLS = {"pytest", "pytest-xdist", "ruff", "mypy", "hypothesis", "schemathesis", "pgserver", "aiohttp",
                   "setuptools", "psutil", "pip-tools", "pip-audit"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    """Distribution -> version of every ``name==version`` line of a pinned (or .in) requirements file."""
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#\\]+)", line)
        if match:
            pins[_norm(match[1])] = match[2]
    return pins


@functools.cache
def _imported_by_processes() -> dict[str, list[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(sorted(_pins(REPO / "requirements.txt")))],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"a process needs a module requirements.txt does not provide:\n{proc.stderr}"
    loaded: dict[str, list[str]] = json.loads(proc.stdout)
    return loaded


def test_the_procfile_processes_import_only_what_requirements_txt_pins() -> None:
    pinned = set(_pins(REPO / "requirements.txt"))
    loaded = _imported_by_processes()
    outside = {top: dists for top, dists in loaded.items() if not pinned & set(dists)}
    assert not outside, f"imported by the service but not pinned in requirements.txt: {outside}"
    assert {"flask", "hypercorn", "psycopg", "google", "websockets"} <= set(loaded)  # the probe did import them


def test_every_direct_production_requirement_is_imported_by_a_process() -> None:
    used = {dist for dists in _imported_by_processes().values() for dist in dists}
    unused = set(_pins(REPO / "requirements.in")) - used
    assert not unused, f"requirements.in lists packages no Procfile process imports (requirements-dev.in?): {unused}"


def test_requirements_txt_pins_no_development_tool() -> None:
    dev_tools = KNOWN_DEV_TOOLS | set(_pins(REPO / "requirements-dev.in"))
    pinned = set(_pins(REPO / "requirements.txt"))
    leaked = sorted(pinned & dev_tools) + sorted(p for p in pinned if p.startswith("types-"))
    assert not leaked, f"development tools pinned in requirements.txt (production installs it): {leaked}"


def test_packages_in_both_files_are_pinned_at_the_same_version() -> None:
    prod, dev = _pins(REPO / "requirements.txt"), _pins(REPO / "requirements-dev.txt")
    differ = {name: (prod[name], dev[name]) for name in prod.keys() & dev.keys() if prod[name] != dev[name]}
    assert not differ, f"requirements.txt vs requirements-dev.txt (re-run `make lock`): {differ}"
    assert set(_pins(REPO / "requirements-dev.in")) <= dev.keys()
