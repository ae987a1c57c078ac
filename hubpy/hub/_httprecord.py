"""What a ``hub.http`` call leaves behind: the reply the agent gets (masked of its secrets) and the log line
(method, host and path as the agent wrote them, no query, no secret).

Shared by the dispatcher (dispatcher/httpcall/run.py: the JobLog line, the reply on the sandbox's stdin) and
``python -m hub run`` (hub/_httplocal.py): an author sees locally the lines the hub would write.
Standard library only, Python 3.10+.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ._secrets import SecretBox

AGENT_ALLOW_VAR = "HUB_HTTP_ALLOW"  # the agent's own allow-list, one of its env vars
MAX_LOGGED_PATH = 120
MAX_LOGGED_MESSAGE = 200


def logged_where(raw_url: Any) -> str:
    """``host/path`` of the URL the agent wrote (placeholders, not values; no query), for the log line."""
    if not isinstance(raw_url, str):
        return "(no url)"
    try:
        parts = urlsplit(raw_url)
        host = parts.hostname or "?"
    except ValueError:
        return "(invalid url)"
    path = parts.path or "/"
    if len(path) > MAX_LOGGED_PATH:
        path = path[:MAX_LOGGED_PATH] + "…"
    return host + path


def call_target(params: Any) -> str:
    """``METHOD host/path`` of a call's params, for its log line."""
    get = params.get if isinstance(params, dict) else {}.get
    return f"{str(get('method') or '?').upper()[:10]} {logged_where(get('url'))}"


def limit_message(max_calls: int) -> str:
    return f"this run may make at most {max_calls} hub.http calls (HUB_HTTP_MAX_CALLS)"


def limit_line(max_calls: int) -> str:
    return f"http call refused: over HUB_HTTP_MAX_CALLS ({max_calls}) for this run"


def ok_line(n: int, where: str, *, status: int, elapsed_ms: int, size: int, redirects: int, final_url: str) -> str:
    via = ""
    if redirects:
        via = f", {redirects} redirect{'s' if redirects > 1 else ''} to {logged_where(final_url)}"
    return f"http call {n}: {where} -> {status}, {elapsed_ms} ms, {size} bytes{via}"


def failed_line(n: int, where: str, *, kind: str, message: str, elapsed_ms: int, box: SecretBox) -> str:
    return f"http call {n}: {where} failed ({kind}: {box.clip(message, MAX_LOGGED_MESSAGE)}), {elapsed_ms} ms"


def reply(box: SecretBox, *, status: int, reason: str, headers: dict[str, str], text: str, url: str, elapsed_ms: int,
          size: int, redirects: int) -> dict[str, Any]:
    """The result the agent gets: every secret masked (an API that echoes the request must not hand it back)."""
    mask = box.mask
    return {
        "status": status,
        "reason": mask(reason),
        "headers": {mask(k): mask(v) for k, v in headers.items()},
        "text": mask(text),
        "url": mask(url),
        "elapsed_ms": elapsed_ms,
        "size": size,
        "redirects": redirects,
    }
