"""The list of files sent to Piston for one run: launcher, hub.py with the context, the agent's files.

Piston runs the FIRST file (``python3 _hub_launcher.py``, cwd = the box folder, so sibling
modules import). The launcher calls ``hub._bootstrap()`` and runs the agent's entrypoint as
``__main__``. Piston refuses a request body over 100 kB, so the chat history embedded in the
context is windowed to the newest messages that fit.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

LAUNCHER_NAME = "_hub_launcher.py"
HUB_NAME = "hub.py"
# One source for the SDK: the pip-installable package's __init__.py is also the sandbox's hub.py.
HUB_SOURCE_PATH = Path(__file__).resolve().parent.parent / "hubpy" / "hub" / "__init__.py"
LOCAL_RUNNER_PATH = HUB_SOURCE_PATH.parent / "_local.py"
SENTINEL = "_EMBEDDED_CONTEXT: str | None = None  # replaced by the dispatcher with the run's context (JSON text)"
_RESERVED = (HUB_NAME, LAUNCHER_NAME)


class BundleError(Exception):
    """The agent's files cannot be made into a runnable bundle; the message says why."""


@dataclass(frozen=True)
class AgentSource:
    """One agent file as it goes into the box. ``content`` is base64 text when ``encoding`` is "base64"."""

    name: str
    content: str
    encoding: str = "utf8"


@dataclass(frozen=True)
class BuiltBundle:
    files: list[dict[str, str]]  # Piston's files field, launcher first
    entry: str
    history_kept: int
    history_cut: int  # messages left out of the embedded context in total


def _load_local_runner() -> ModuleType:
    """The hub package's local runner (hubpy/hub/_local.py, stdlib only) runs agents on an author's machine
    exactly as the sandbox does: it is the one source of the launcher and of the entrypoint rule."""
    name = "_agenthub_sdk_local"  # not "hub._local": an installed hub package must not shadow or be shadowed
    spec = importlib.util.spec_from_file_location(name, LOCAL_RUNNER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


_LOCAL = _load_local_runner()


def launcher_source(entry: str) -> str:
    """The launcher that runs ``entry`` (a path relative to the box folder)."""
    return str(_LOCAL.launcher_source(entry))


@functools.cache
def hub_template() -> str:
    """The source of hubpy/hub/__init__.py (shipped as hub.py), with the sentinel line still in it.
    Read once per process: it is part of the deployed code, like the module loaded above."""
    return HUB_SOURCE_PATH.read_text(encoding="utf-8")


def render_hub(context: dict[str, Any], template: str | None = None) -> str:
    """hub.py with ``context`` embedded (a JSON string literal is a valid Python str literal)."""
    source = hub_template() if template is None else template
    if source.count(SENTINEL) != 1:
        raise RuntimeError("hubpy/hub/__init__.py must contain the _EMBEDDED_CONTEXT sentinel line exactly once")
    return source.replace(SENTINEL, "_EMBEDDED_CONTEXT = " + json.dumps(json.dumps(context)))


def check_name(name: str) -> str:
    """``name`` if it is a safe relative path inside the box, else BundleError."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise BundleError(f"bad agent file name {name!r}: must be a relative path")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BundleError(f"bad agent file name {name!r}: must be a relative path without '.', '..' or empty parts")
    return name


def choose_entrypoint(names: list[str]) -> str:
    """main.py, else agent.py, else the only .py file at any depth (the hub package's rule)."""
    try:
        return str(_LOCAL.choose_entrypoint(names))
    except _LOCAL.LocalRunError as exc:
        raise BundleError(str(exc)) from None


def _check_sources(sources: list[AgentSource]) -> None:
    seen: set[str] = set()
    for source in sources:
        check_name(source.name)
        if source.name in seen:
            raise BundleError(f"two agent files are named {source.name!r}")
        seen.add(source.name)
        # A nested entrypoint is the only .py file, so only the top level can shadow ours.
        if source.name in _RESERVED:
            raise BundleError(f"agent file {source.name!r} would shadow the hub's own file of that name; rename it")
        if source.encoding not in ("utf8", "base64"):
            raise BundleError(f"agent file {source.name!r}: unknown encoding {source.encoding!r}")


def _escaped_len(fragment: str) -> int:
    """Bytes ``fragment`` of the context JSON takes in the request body (escaped by the hub literal, then the body)."""
    return len(json.dumps(json.dumps(fragment)[1:-1])) - 2


def _files(context: dict[str, Any], sources: list[AgentSource], entry: str, template: str) -> list[dict[str, str]]:
    files = [
        {"name": LAUNCHER_NAME, "content": launcher_source(entry)},
        {"name": HUB_NAME, "content": render_hub(context, template)},
    ]
    for source in sources:
        item = {"name": source.name, "content": source.content}
        if source.encoding != "utf8":
            item["encoding"] = source.encoding
        files.append(item)
    return files


def body_size(files: list[dict[str, str]]) -> int:
    """Bytes the files list takes in the JSON request body."""
    return len(json.dumps(files).encode())


def build_files(
    context: dict[str, Any],
    sources: list[AgentSource],
    *,
    max_body_bytes: int = 100_000,
    overhead_bytes: int = 2048,
) -> BuiltBundle:
    """Piston's files for this run, keeping the newest chat messages that fit in ``max_body_bytes``.

    ``context["history_cut"]`` (messages already left out upstream, default 0) grows by the
    messages dropped here. The caller's dict is not changed.
    """
    entry = choose_entrypoint([s.name for s in sources])
    _check_sources(sources)
    template = hub_template()
    history: list[dict[str, Any]] = list(context.get("chat_history") or [])
    cut_before = int(context.get("history_cut") or 0)
    budget = max_body_bytes - overhead_bytes

    # Size with no history, the cut count at its largest (a smaller number never takes more digits).
    base_ctx = {**context, "chat_history": [], "history_cut": cut_before + len(history)}
    base = body_size(_files(base_ctx, sources, entry, template))
    if base > budget:
        raise BundleError(
            f"agent bundle too large for Piston: {base} bytes of files and hub context + {overhead_bytes} bytes of request "
            f"overhead, over the limit of {max_body_bytes} bytes"
        )

    # Escaping is per character, so each message's cost adds up: measure each once, newest first.
    separator = _escaped_len(", ")
    kept = 0
    used = base
    for message in reversed(history):
        cost = _escaped_len(json.dumps(message)) + (separator if kept else 0)
        if used + cost > budget:
            break
        used += cost
        kept += 1

    while True:  # verify the estimate with the real encoding; shrink only if it was off
        window = history[len(history) - kept :] if kept else []
        final_ctx = {**context, "chat_history": window, "history_cut": cut_before + len(history) - kept}
        files = _files(final_ctx, sources, entry, template)
        if body_size(files) <= budget or kept == 0:
            return BuiltBundle(files=files, entry=entry, history_kept=kept, history_cut=cut_before + len(history) - kept)
        kept -= 1
