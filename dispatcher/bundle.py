"""The files sent to the sandbox for one run: the launcher, ``hub.py``, the agent's files, the context.

The box is the hub package's own (``hubpy/hub/_box.py``, shared with ``python -m hub run``):
Piston runs the FIRST file, the launcher, which starts the hub module and runs the agent's
entrypoint as ``__main__``. ``hub.py`` is the package's ``__init__.py``, the same bytes for every
run; the run's context (the agent's env vars included, never its ``SECRET_*`` ones) travels as data, in a JSON file beside it.
Piston refuses a request body over 100 kB, so the chat history in the context is windowed to the
newest messages that fit.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from hubpy.hub import _box

LAUNCHER_NAME = _box.LAUNCHER_NAME
HUB_NAME = _box.HUB_NAME
CONTEXT_NAME = _box.CONTEXT_NAME
HUB_SOURCE_PATH = _box.HUB_SOURCE_PATH


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
    history_cut: int  # messages left out of the shipped context in total


def launcher_source(entry: str) -> str:
    """The launcher that runs ``entry`` (a path relative to the box folder)."""
    return _box.launcher_source(entry)


def hub_source() -> str:
    """The box's hub.py: the hub package's __init__.py, byte for byte."""
    return _box.hub_source()


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
        return _box.choose_entrypoint(names)
    except _box.BoxError as exc:
        raise BundleError(str(exc)) from None


def _check_sources(sources: list[AgentSource]) -> None:
    seen: set[str] = set()
    for source in sources:
        check_name(source.name)
        if source.name in seen:
            raise BundleError(f"two agent files are named {source.name!r}")
        seen.add(source.name)
        # A nested entrypoint is the only .py file, so only the top level can shadow ours.
        if source.name in _box.RESERVED:
            raise BundleError(f"agent file {source.name!r} would shadow the hub's own file of that name; rename it")
        if source.encoding not in ("utf8", "base64"):
            raise BundleError(f"agent file {source.name!r}: unknown encoding {source.encoding!r}")


def _files(context: dict[str, Any], sources: list[AgentSource], entry: str) -> list[dict[str, str]]:
    files = [{"name": LAUNCHER_NAME, "content": launcher_source(entry)}, {"name": HUB_NAME, "content": hub_source()}]
    for source in sources:
        item = {"name": source.name, "content": source.content}
        if source.encoding != "utf8":
            item["encoding"] = source.encoding
        files.append(item)
    files.append({"name": CONTEXT_NAME, "content": _box.context_text(context)})
    return files


def body_size(files: list[dict[str, str]]) -> int:
    """Bytes the files list takes in the JSON request body: ``len(json.dumps(files).encode())``, without
    serialising hub.py and the agent's files again for every run (docs/performance.md, session 4).
    ``json.dumps`` escapes every non-ASCII character, so a character is a byte; items are joined by ", "."""
    if not files:
        return 2
    return 2 + sum(map(_item_size, files)) + 2 * (len(files) - 1)


def _item_size(item: dict[str, str]) -> int:
    if item["name"] == CONTEXT_NAME:  # the run's own: sized once, never worth keeping
        return len(json.dumps(item))
    return _file_item_size(tuple(item.items()))


@functools.lru_cache(maxsize=64)
def _file_item_size(item: tuple[tuple[str, str], ...]) -> int:
    """The launcher, hub.py and the agent's files: the same text run after run (a cache hit hashes and
    compares it, which is much cheaper than escaping it into JSON)."""
    return len(json.dumps(dict(item)))


def _in_body(text: str) -> int:
    """Bytes ``text`` takes inside a string of the JSON request body (escaped, without the quotes)."""
    return len(_escape_ascii(text)) - 2


# What json.dumps does for a str, and for a context file's part (``_box.context_text``), without building an
# encoder per call: the window's loop sizes every history message (docs/performance.md, session 4).
_escape_ascii = json.encoder.encode_basestring_ascii
_compact_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def build_files(
    context: dict[str, Any],
    sources: list[AgentSource],
    *,
    max_body_bytes: int = 100_000,
    overhead_bytes: int = 2048,
) -> BuiltBundle:
    """The sandbox's files for this run, keeping the newest chat messages that fit in ``max_body_bytes``.

    ``context["history_cut"]`` (messages already left out upstream, default 0) grows by the
    messages dropped here. The caller's dict is not changed.
    """
    entry = choose_entrypoint([s.name for s in sources])
    _check_sources(sources)
    history: list[dict[str, Any]] = list(context.get("chat_history") or [])
    cut_before = int(context.get("history_cut") or 0)
    budget = max_body_bytes - overhead_bytes

    # Size with no history, the cut count at its largest (a smaller number never takes more digits).
    base_ctx = {**context, "chat_history": [], "history_cut": cut_before + len(history)}
    base = body_size(_files(base_ctx, sources, entry))
    if base > budget:
        raise BundleError(
            f"agent bundle too large for Piston: {base} bytes of files and hub context + {overhead_bytes} bytes of request "
            f"overhead, over the limit of {max_body_bytes} bytes"
        )

    # The context file's text is a string of the body, escaped character by character: each message's
    # cost adds up (its JSON text, and a "," after the first). Measure each once, newest first.
    kept = 0
    used = base
    for message in reversed(history):
        cost = _in_body(_compact_text(message)) + (1 if kept else 0)
        if used + cost > budget:
            break
        used += cost
        kept += 1

    while True:  # verify the estimate with the real encoding; shrink only if it was off
        window = history[len(history) - kept :] if kept else []
        final_ctx = {**context, "chat_history": window, "history_cut": cut_before + len(history) - kept}
        files = _files(final_ctx, sources, entry)
        if body_size(files) <= budget or kept == 0:
            return BuiltBundle(files=files, entry=entry, history_kept=kept, history_cut=cut_before + len(history) - kept)
        kept -= 1
