"""The aiohttp app: ``generateContent``, ``streamGenerateContent`` (``?alt=sse``: Server-Sent Events of
GenerateContentResponse chunks, as Gemini streams) plus ``/_control`` endpoints for tests (see README.md).

A streamed answer is the same text as ``generateContent``'s, cut into ``chunks`` pieces sent ``delay_ms``
apart (defaults: FAKEGEMINI_STREAM_CHUNKS=4, FAKEGEMINI_STREAM_DELAY_MS=20; ``POST /_control/stream``
``{"chunks": n, "delay_ms": ms}`` changes them). Each request's record has the wall-clock time each chunk
was sent (``chunk_sent_at``), for the streaming benchmark."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakegemini import answers
from fakegemini.answers import Fault, Script

MAX_RECORDED = 2000  # requests kept for /_control/requests (oldest dropped)


@dataclass
class State:
    api_key: str
    script: deque[Script] = field(default_factory=deque)
    marker_counts: dict[str, int] = field(default_factory=dict)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_RECORDED))
    seq: int = 0
    stream_chunks: int = field(default_factory=lambda: int(os.environ.get("FAKEGEMINI_STREAM_CHUNKS") or 4))
    stream_delay_s: float = field(default_factory=lambda: float(os.environ.get("FAKEGEMINI_STREAM_DELAY_MS") or 20) / 1000)


STATE = web.AppKey("state", State)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


def _say(line: str) -> None:
    # Method, path and status only: never the key, never prompt text.
    print(f"fakegemini: {line}", file=sys.stderr, flush=True)


def _key_ok(state: State, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), state.api_key.encode())


async def generate_content(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    version = request.match_info["version"]
    model, _, action = request.match_info["action"].partition(":")
    state.seq += 1
    record: dict[str, Any] = {"seq": state.seq, "path": request.path, "api_version": version, "model": model}
    status, body, delay = await _answer(state, request, version, model, action, record)
    if delay:
        await asyncio.sleep(delay)
    if action == "streamGenerateContent" and status == 200:
        return await _stream(request, state, record, body)
    record["status"] = status
    usage = body.get("usageMetadata") or {}
    record["usage"] = {k: usage.get(k, 0) for k in ("promptTokenCount", "candidatesTokenCount", "totalTokenCount")}
    state.requests.append(record)
    _say(f"#{record['seq']} POST {request.path} -> {status}")
    return _json(status, body)


async def _answer(
    state: State, request: web.Request, version: str, model: str, action: str, record: dict[str, Any]
) -> tuple[int, dict[str, Any], float]:
    given = request.headers.get("x-goog-api-key") or request.query.get("key")
    record["key_present"] = given is not None
    record["key_ok"] = _key_ok(state, given)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    record["body"] = body
    if action not in ("generateContent", "streamGenerateContent"):
        return 404, {"error": {"code": 404, "message": f"Method not found: {action}", "status": "NOT_FOUND"}}, 0.0
    if given is None:
        return 403, answers.error_body(403), 0.0
    if not record["key_ok"]:
        return 400, answers.api_key_invalid_body(), 0.0
    problem = answers.validate(body)
    if problem is not None:
        return 400, answers.invalid_argument(problem), 0.0
    assert isinstance(body, dict)
    if not model.startswith("gemini-"):
        return 404, answers.error_body(404, model=model, api_version=version), 0.0
    script = state.script.popleft() if state.script else _marker_script(state, body)
    record["scripted"] = None if script is None else script.fault.value
    if script is not None and script.fault is Fault.CUT:
        if action != "streamGenerateContent":
            return 503, answers.error_body(503, model=model), 0.0
        record["cut_after"] = int(script.value or "1")
        return 200, answers.success(model, body), 0.0
    return _scripted(script, model, body)


async def _stream(request: web.Request, state: State, record: dict[str, Any], answer: dict[str, Any]) -> web.StreamResponse:
    """The answer as Server-Sent Events (``alt=sse``): one ``data: <GenerateContentResponse JSON>`` event per
    chunk, ``stream_delay_s`` apart; a ``cut`` script ends with an error event instead of its remaining chunks."""
    chunks = answers.stream_chunks(answer, state.stream_chunks)
    cut = record.get("cut_after")
    if cut is not None:
        chunks = chunks[:cut]
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    sent: list[float] = []
    record["status"] = 200
    record["usage"] = {k: (answer.get("usageMetadata") or {}).get(k, 0)
                       for k in ("promptTokenCount", "candidatesTokenCount", "totalTokenCount")}
    record["chunk_sent_at"] = sent
    state.requests.append(record)
    try:
        for i, chunk in enumerate(chunks):
            if i:
                await asyncio.sleep(state.stream_delay_s)
            sent.append(time.time())
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
        if cut is not None:
            await asyncio.sleep(state.stream_delay_s)
            await response.write(b"data: " + json.dumps(answers.error_body(503)).encode() + b"\r\n\r\n")
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        record["status"] = "client_gone"
        raise
    _say(f"#{record['seq']} POST {request.path} -> 200 (stream of {len(chunks)}{', cut' if cut is not None else ''})")
    return response


def _marker_script(state: State, body: dict[str, Any]) -> Script | None:
    prompt = answers.last_user_text(body)
    script = answers.parse_marker(prompt)
    if script is None or script.times is None:
        return script
    seen = state.marker_counts.get(prompt, 0) + 1
    state.marker_counts[prompt] = seen
    return script if seen <= script.times else None


def _scripted(script: Script | None, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    if script is None:
        return 200, answers.success(model, body), 0.0
    match script.fault:
        case Fault.ERROR:
            code = int(script.value or "500")
            return code, answers.error_body(code, model=model), 0.0
        case Fault.BLOCK:
            return 200, answers.blocked_prompt(model, body, script.value or "SAFETY"), 0.0
        case Fault.SAFETY:
            return 200, answers.finish_without_text(model, body, "SAFETY"), 0.0
        case Fault.MAX_TOKENS:
            return 200, answers.finish_without_text(model, body, "MAX_TOKENS"), 0.0
        case Fault.SLOW:
            return 200, answers.success(model, body), float(script.value or "1")
        case Fault.TEXT:
            return 200, answers.success(model, body, script.value or ""), 0.0
        case Fault.CUT:  # a generateContent call cannot be cut midway: it fails as a lost stream would
            return 503, answers.error_body(503, model=model), 0.0


def _script_item(item: Any) -> Script:
    """One control-script entry: {"fault": "error"|"block"|"safety"|"max_tokens"|"slow"|"text", "value": ...}."""
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


async def control_stream(request: web.Request) -> web.Response:
    """How streamed answers are cut: {"chunks": int >= 1, "delay_ms": number >= 0} (either may be left out)."""
    state = request.app[STATE]
    try:
        data = await request.json()
        chunks = int(data.get("chunks", state.stream_chunks))
        delay_s = float(data.get("delay_ms", state.stream_delay_s * 1000)) / 1000
        if chunks < 1 or delay_s < 0:
            raise ValueError("chunks >= 1 and delay_ms >= 0")
    except (ValueError, TypeError, AttributeError) as exc:
        return _json(400, {"error": f"bad stream settings: {exc}"})
    state.stream_chunks, state.stream_delay_s = chunks, delay_s
    return _json(200, {"chunks": chunks, "delay_ms": delay_s * 1000})


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


def make_app(api_key: str) -> web.Application:
    app = web.Application(client_max_size=20 * 2**20)
    app[STATE] = State(api_key=api_key)
    app.router.add_post(r"/{version:v1[a-z0-9]*}/models/{action}", generate_content)
    app.router.add_post("/_control/script", control_script)
    app.router.add_post("/_control/key", control_key)
    app.router.add_post("/_control/stream", control_stream)
    app.router.add_get("/_control/requests", control_requests)
    app.router.add_post("/_control/reset", control_reset)
    app.router.add_get("/_control/health", health)
    return app
