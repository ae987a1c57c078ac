"""The aiohttp app: ``/v1/chat/completions`` plus ``/_control`` endpoints for tests (see README.md)."""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakeopenai import answers
from fakeopenai.answers import Fault, Script

MAX_RECORDED = 2000  # requests kept for /_control/requests (oldest dropped)


@dataclass
class State:
    api_key: str
    script: deque[Script] = field(default_factory=deque)
    marker_counts: dict[str, int] = field(default_factory=dict)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_RECORDED))
    seq: int = 0


STATE = web.AppKey("state", State)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


def _say(line: str) -> None:
    # Method, path and status only: never the key, never prompt text.
    print(f"fakeopenai: {line}", file=sys.stderr, flush=True)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.seq += 1
    record: dict[str, Any] = {"seq": state.seq, "path": request.path}
    status, body, delay = await _answer(state, request, record)
    if delay:
        await asyncio.sleep(delay)
    record["status"] = status
    usage = body.get("usage") or {}
    record["usage"] = {k: usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    state.requests.append(record)
    _say(f"#{record['seq']} POST {request.path} -> {status}")
    sent = record.get("body")
    if status == 200 and isinstance(sent, dict) and sent.get("stream") is True:
        return await _stream(request, body, bool((sent.get("stream_options") or {}).get("include_usage")))
    return _json(status, body)


async def _stream(request: web.Request, full: dict[str, Any], include_usage: bool) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for chunk in answers.stream_chunks(full, include_usage):
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _answer(state: State, request: web.Request, record: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    given = _bearer(request)
    record["key_present"] = given is not None
    record["key_ok"] = given is not None and hmac.compare_digest(given.encode(), state.api_key.encode())
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    record["body"] = body
    record["model"] = body.get("model") if isinstance(body, dict) else None
    if given is None:
        return 401, answers.error_body("You didn't provide an API key. You need to provide your API key in an "
                                       "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."), 0.0
    if not record["key_ok"]:
        return 401, answers.status_error(401), 0.0
    problem = answers.validate(body)
    if problem is not None:
        message, param = problem
        return 400, answers.error_body(message, param=param), 0.0
    assert isinstance(body, dict)
    script = state.script.popleft() if state.script else _marker_script(state, body)
    record["scripted"] = None if script is None else script.fault.value
    return _scripted(script, str(body["model"]), body)


def _marker_script(state: State, body: dict[str, Any]) -> Script | None:
    prompt = answers.last_user_text(body)
    script = answers.parse_marker(prompt)
    if script is None or script.times is None:
        return script
    seen = state.marker_counts.get(prompt, 0) + 1
    state.marker_counts[prompt] = seen
    return script if seen <= script.times else None


def _scripted(script: Script | None, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    created = int(time.time())
    if script is None:
        return 200, answers.success(model, body, created=created), 0.0
    match script.fault:
        case Fault.ERROR:
            code = int(script.value or "500")
            return code, answers.status_error(code, model), 0.0
        case Fault.QUOTA:
            return 429, answers.quota_error(), 0.0
        case Fault.REFUSAL:
            return 200, answers.completion(model, body, text=None, finish="stop",
                                           refusal="I'm sorry, I can't help with that.", created=created), 0.0
        case Fault.CONTENT_FILTER:
            return 200, answers.completion(model, body, text=None, finish="content_filter", created=created), 0.0
        case Fault.MAX_TOKENS:
            return 200, answers.completion(model, body, text="", finish="length", created=created), 0.0
        case Fault.SLOW:
            return 200, answers.success(model, body, created=created), float(script.value or "1")
        case Fault.TEXT:
            return 200, answers.success(model, body, script.value or "", created=created), 0.0


def _script_item(item: Any) -> Script:
    """One control-script entry: {"fault": "error"|"quota"|"refusal"|"content_filter"|"max_tokens"|"slow"|"text",
    "value": ...}."""
    if not isinstance(item, dict):
        raise ValueError("each response must be an object")
    fault = Fault(str(item.get("fault")))
    value = item.get("value")
    if fault is Fault.ERROR and int(value or 0) not in answers.ERROR_STATUSES:
        raise ValueError(f"error value must be one of {answers.ERROR_STATUSES}")
    return Script(fault, None if value is None else str(value))


async def control_script(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        data = await request.json()
        items = [_script_item(i) for i in data["responses"]]
    except (ValueError, KeyError, TypeError) as exc:
        return _json(400, {"error": f"bad script: {exc}"})
    state.script.extend(items)
    return _json(200, {"queued": len(state.script)})


async def control_key(request: web.Request) -> web.Response:
    """Change the accepted key (e.g. to make the dispatcher's key invalid, as a revoked key is)."""
    try:
        key = (await request.json())["key"]
    except (ValueError, KeyError, TypeError):
        key = None
    if not isinstance(key, str) or not key:
        return _json(400, {"error": "expected {\"key\": str}"})
    request.app[STATE].api_key = key
    return _json(200, {"ok": True})


async def control_requests(request: web.Request) -> web.Response:
    return _json(200, {"requests": list(request.app[STATE].requests)})


async def control_reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.script.clear()
    state.marker_counts.clear()
    state.requests.clear()
    return _json(200, {"ok": True})


async def health(request: web.Request) -> web.Response:
    return _json(200, {"ok": True, "fake": True})


async def models(request: web.Request) -> web.Response:
    """GET /v1/models: what a client lists to check the endpoint (every model name is accepted)."""
    return _json(200, {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 0,
                                                   "owned_by": "fakeopenai"}]})


def make_app(api_key: str) -> web.Application:
    app = web.Application(client_max_size=20 * 2**20)
    app[STATE] = State(api_key=api_key)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/_control/script", control_script)
    app.router.add_post("/_control/key", control_key)
    app.router.add_get("/_control/requests", control_requests)
    app.router.add_post("/_control/reset", control_reset)
    app.router.add_get("/_control/health", health)
    return app
