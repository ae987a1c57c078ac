"""The ``hub`` module that agent code imports inside the sandbox.

    import hub

    env = hub.get_env_vars()
    history = hub.get_chat_history()
    hub.send_message("Hello from the agent!")
    answer = hub.call_llm("Summarise: " + hub.get_prompt())
    r = hub.http("GET", "https://api.example.com/v1/items", headers={"Authorization": "Bearer {{SECRET_API_TOKEN}}"})

The dispatcher ships this file into the Piston sandbox as ``hub.py``, unchanged, with the run's
context beside it as data (``_hub_context.json``) and a small launcher that calls
``hub._bootstrap()`` and then runs the agent.
The sandbox has no network, so everything the agent tells the hub travels as protocol lines on
stdout, and answers to ``call_llm`` / ``call_agent`` / ``http`` come back as lines on stdin (WebSocket
transport only). The wire format is documented in ``dispatcher/protocol.py``; both sides must agree.
On the WebSocket transport stdin belongs to the hub: a background thread reads it from the start,
hands each reply to its caller, and ends the process at once on the hub's ``cancel`` line (a
stopped or cancelled run); the agent's own ``sys.stdin`` is empty.

This file is standard-library only and self-contained. Imported outside the sandbox (tests,
tools) it works with an empty context; call ``hub._init({...})`` to give it one.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import math
import os
import sys
import threading
from typing import IO, Any

__all__ = [
    "HttpError",
    "HttpResponse",
    "HubError",
    "LLMError",
    "call_agent",
    "call_llm",
    "get_agent",
    "get_attempt",
    "get_chat_history",
    "get_env_vars",
    "get_job_id",
    "get_prompt",
    "get_session_id",
    "get_user_vars",
    "http",
    "log",
    "send_message",
    "set_progress",
    "set_user_var",
]

_CONTEXT_FILE = "_hub_context.json"  # the run's context, written by the dispatcher beside this file

# Must match dispatcher/protocol.py: a protocol line is MARKER + nonce + ":" + JSON + "\n".
_MARKER = "\x1ehub:"
_LOG_LEVELS = ("debug", "info", "warning", "error")
_CANCEL = "cancel"  # a control line on stdin (dispatcher/protocol.py, encode_control): end the process now
_CANCEL_EXIT_STATUS = 143
_WS_ONLY = "{name} requires the WebSocket transport (PISTON_TRANSPORT=ws); this run uses the batch /execute transport"


class HubError(Exception):
    """A hub operation failed (wrong transport, error reply from the dispatcher, lost connection)."""

    kind: str | None = None


class LLMError(HubError):
    """``call_llm`` failed; ``kind`` says how: ``"rate_limited"``, ``"unavailable"``, ``"bad_request"``,
    ``"auth"``, ``"blocked"``, ``"max_tokens"``, ``"not_configured"``, ``"limit"`` or ``"invalid_request"``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class HttpError(HubError):
    """``http`` failed; ``kind`` says how: ``"forbidden"`` (a host or address not allowed), ``"timeout"``,
    ``"too_large"`` (the response), ``"unavailable"`` (the connection failed), ``"limit"`` (too many calls in
    this run) or ``"bad_request"`` (a malformed argument: nothing was sent). An HTTP error status (404, 500, ...)
    is not an HttpError: it is a response with that status."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class _LineTrackingStdout:
    """A thin wrapper around the real stdout that remembers whether the agent left a partial line.

    Every write (the agent's and the hub's) goes through one lock, so a protocol line is never
    interleaved with, or glued onto, text another thread is printing.
    """

    def __init__(self, inner: IO[str]) -> None:
        self._inner = inner
        self.lock = threading.RLock()
        self.at_line_start = True

    def write(self, text: str) -> int:
        with self.lock:
            written = self._inner.write(text)
            if text:
                self.at_line_start = text.endswith("\n")
            return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self.lock:
            self._inner.flush()

    def write_protocol_line(self, line: str) -> None:
        with self.lock:
            if not self.at_line_start:
                self._inner.write("\n")
            self._inner.write(line)
            # Python's stdout is block-buffered when piped: unflushed lines would arrive late or be lost on a kill.
            self._inner.flush()
            self.at_line_start = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_context: dict[str, Any] = {}
_out: _LineTrackingStdout | None = None
_in: IO[str] | None = None
_ids = itertools.count(1)
_ids_lock = threading.Lock()
_replies_cond = threading.Condition()
_replies: dict[int, list[dict[str, Any]]] = {}  # per call id, in arrival order (a streaming call gets several)
_pending: set[int] = set()
_reader_active = False


def _init(
    context: dict[str, Any], *, stdout: IO[str] | _LineTrackingStdout | None = None, stdin: IO[str] | None = None
) -> None:
    """Set the run's context (and optionally the streams the protocol uses). Called by ``_bootstrap``."""
    global _context, _out, _in
    if not isinstance(context, dict):
        raise TypeError("context must be a dict")
    _context = copy.deepcopy(context)
    if stdout is not None:
        _out = stdout if isinstance(stdout, _LineTrackingStdout) else _LineTrackingStdout(stdout)
    if stdin is not None:
        _in = stdin


def _bootstrap() -> None:
    """Load the run's context and wrap sys.stdout; the launcher calls this before the agent runs."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), _CONTEXT_FILE)
    try:
        with open(path, encoding="utf-8") as f:  # UTF-8 whatever the sandbox's locale
            context = json.load(f)
    except FileNotFoundError:
        raise HubError(f"hub._bootstrap() needs the run's context, which the hub ships beside hub.py as {_CONTEXT_FILE}; "
                       "outside the sandbox use hub._init(context) instead") from None
    tracked = _LineTrackingStdout(sys.stdout)
    sys.stdout = tracked
    _init(context, stdout=tracked, stdin=sys.stdin)
    if context.get("transport") == "ws":
        _start_stdin_reader()


def _start_stdin_reader() -> None:
    """Read stdin in the background from now on (WebSocket transport): replies go to their callers, and the
    hub's cancel line ends this process at once, whatever the agent is doing."""
    global _reader_active
    stream = _in if _in is not None else sys.stdin
    with _replies_cond:
        _reader_active = True  # callers of _call now wait for their reply instead of reading stdin themselves
    sys.stdin = io.StringIO()  # the agent reading stdin would take the hub's lines: it sees an empty stream
    threading.Thread(target=_read_stdin, args=(stream,), name="hub-stdin", daemon=True).start()


def _read_stdin(stream: IO[str]) -> None:
    global _reader_active
    control = _MARKER + str(_context.get("nonce", "")) + ":"  # only the hub knows the run's nonce
    try:
        while True:
            line = stream.readline()
            if not line:
                return
            if line.startswith(control):
                _control(line[len(control):])
                continue
            reply = _parse_reply(line)
            if reply is not None:
                with _replies_cond:
                    if reply["id"] in _pending:
                        _replies.setdefault(reply["id"], []).append(reply)
                        _replies_cond.notify_all()
    except (OSError, ValueError):  # stdin closed under us: like its end
        return
    finally:
        with _replies_cond:
            _reader_active = False  # a caller still waiting reads stdin itself, finds its end and says so
            _replies_cond.notify_all()


def _control(payload: str) -> None:
    try:
        message = json.loads(payload)
    except ValueError:
        return
    if isinstance(message, dict) and message.get("type") == _CANCEL:
        # At once: no flush (another thread may hold stdout's lock), no cleanup. The run's output is not wanted.
        os._exit(_CANCEL_EXIT_STATUS)


def _flush() -> None:
    """Flush stdout and stderr (the launcher calls this when the agent finishes)."""
    for stream in (_out, sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):  # a closed pipe must not hide the agent's own error
                stream.flush()


def _emit(payload: dict[str, Any]) -> None:
    limits = _context.get("limits") or {}
    max_text = limits.get("max_message_chars")
    if isinstance(max_text, int):
        for field, value in payload.items():
            if isinstance(value, str) and len(value) > max_text:
                raise HubError(f"{payload['type']}: {field} has {len(value)} characters, over the hub's limit of {max_text}")
    try:
        body = json.dumps(payload, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # NaN / Infinity are not JSON: refuse here rather than send a line the hub rejects
        raise ValueError(f"{payload['type']}: {exc}") from None
    line = _MARKER + str(_context.get("nonce", "")) + ":" + body + "\n"
    max_line = limits.get("max_line_chars")
    if isinstance(max_line, int) and len(line) > max_line:
        # The hub would drop the line (and a call would then wait forever): fail here, in the agent.
        raise HubError(f"{payload['type']}: {len(line)} characters once encoded, over the hub's limit of {max_line}")
    if _out is not None:
        _out.write_protocol_line(line)
    else:  # imported outside the sandbox without streams: plain stdout
        sys.stdout.write(line)
        sys.stdout.flush()


# --- context -------------------------------------------------------------------------------


def get_env_vars() -> dict[str, str]:
    """The agent's environment variables (set by its author on the hub), as a new dict."""
    return dict(_context.get("env_vars") or {})


def get_user_vars() -> dict[str, str]:
    """The session's user variables, including those set during this run, as a new dict."""
    return dict(_context.get("user_vars") or {})


def get_chat_history() -> list[dict[str, Any]]:
    """The session's chat messages, oldest first: ``{"role", "content", "timestamp"}`` (ISO-8601).

    The newest messages are kept when the history is too large to ship; the current prompt is the
    last user message. A new list of new dicts: changing it changes nothing on the hub.
    """
    return [dict(m) for m in _context.get("chat_history") or []]


def get_prompt() -> str:
    """The prompt of this invocation."""
    return str(_context.get("prompt") or "")


def get_agent() -> dict[str, str]:
    """The running agent: ``{"id", "name", "version"}``."""
    return dict(_context.get("agent") or {})


def get_job_id() -> str:
    """The id of the Job that tracks this invocation."""
    return str(_context.get("job_id") or "")


def get_attempt() -> int:
    """Which attempt of this invocation is running: 1, then 2, 3… when it runs again (after a dispatcher died,
    a transient fault, or an operator's replay). The service runs an agent's code at least once and writes its
    effects on the hub exactly once; effects outside the hub (an email, a payment) are the agent's to make
    idempotent: a key such as ``f"{hub.get_job_id()}"`` stays the same across attempts, and this number says
    whether an earlier attempt may already have made them."""
    return int(_context.get("attempt") or 1)


def get_session_id() -> str | None:
    """The chat session's id, or None when the run has no session."""
    value = _context.get("session_id")
    return None if value is None else str(value)


# --- one-way messages --------------------------------------------------------------------


def send_message(msg: Any) -> str | None:
    """Add a message from the agent to the session's chat. Non-str values are sent as JSON text.

    An iterator of str (a generator, ``call_llm(..., stream=True)``) is streamed: each chunk reaches the chat's
    listeners as it comes (``delta`` events), and the message holds the whole text once the iterator ends;
    the text is also returned. If the iterator raises, what came before is kept as the message and the
    exception goes on. ``hub.send_message(hub.call_llm(prompt, stream=True))`` is a streamed answer.
    """
    if isinstance(msg, str):
        _emit({"type": "message", "content": msg})
        return None
    if _is_chunks(msg):
        return _send_stream(msg)
    _emit({"type": "message", "content": json.dumps(msg, ensure_ascii=False, default=str)})
    return None


def _is_chunks(msg: Any) -> bool:
    """An iterator or generator of chunks (a list, dict or other container is sent as JSON, as before)."""
    return hasattr(msg, "__next__") and hasattr(msg, "__iter__")


def _send_stream(chunks: Any) -> str:
    parts: list[str] = []
    try:
        for chunk in chunks:
            if not isinstance(chunk, str):
                raise TypeError(f"send_message: a streamed message's chunks must be str, got {type(chunk).__name__}")
            if chunk:
                _emit({"type": "delta", "text": chunk, "final": False})
                parts.append(chunk)
    finally:
        _emit({"type": "delta", "text": "", "final": True})  # the message ends (with what came, on an error)
    return "".join(parts)


def set_progress(percent: float, message: str | None = None) -> None:
    """Report the job's progress, 0 to 100, with an optional status message."""
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not math.isfinite(percent):
        raise ValueError(f"percent must be a number from 0 to 100, got {percent!r}")
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be from 0 to 100, got {percent!r}")
    _emit({"type": "progress", "percent": float(percent), "message": None if message is None else str(message)})


def set_user_var(key: str, value: Any) -> None:
    """Set a session user variable (kept across invocations of this session). ``value`` is stored as str."""
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty str")
    text = value if isinstance(value, str) else str(value)
    _emit({"type": "user_var", "key": key, "value": text})
    _context.setdefault("user_vars", {})[key] = text


def log(message: Any, level: str = "info") -> None:
    """Write a line to the job's log. ``level`` is one of debug, info, warning, error."""
    if level not in _LOG_LEVELS:
        raise ValueError(f"level must be one of {', '.join(_LOG_LEVELS)}, got {level!r}")
    _emit({"type": "log", "level": level, "message": message if isinstance(message, str) else str(message)})


# --- calls that wait for an answer -------------------------------------------------------


def call_llm(
    prompt: str,
    *,
    system: str | None = None,
    history: bool = False,
    model: str | None = None,
    temperature: float | None = None,
    max_output_tokens: int | None = None,
    stream: bool = False,
) -> Any:
    """Ask the hub's LLM and return its text: Gemini, or an OpenAI-compatible model with ``model="openai:<name>"``.

    ``history=True`` also sends this session's chat history; ``system`` is a system instruction.
    ``stream=True``: return an iterator of the text's chunks as the model produces them (the call is sent at
    once; iterate to read it; its ``.text`` is what came so far). Raises ``LLMError`` (with ``.kind``) when the
    model call fails (when streaming, from the iterator, midway too), ``HubError`` on the batch transport.
    """
    _require_ws("call_llm")
    if not isinstance(prompt, str):
        raise TypeError("prompt must be a str")
    if system is not None and not isinstance(system, str):
        raise TypeError("system must be a str or None")
    if model is not None and not isinstance(model, str):
        raise TypeError("model must be a str or None")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))):
        raise TypeError("temperature must be a number or None")
    if max_output_tokens is not None and (isinstance(max_output_tokens, bool) or not isinstance(max_output_tokens, int)):
        raise TypeError("max_output_tokens must be an int or None")
    params = {
        "prompt": prompt,
        "system": system,
        "history": bool(history),
        "model": model,
        "temperature": None if temperature is None else float(temperature),
        "max_output_tokens": max_output_tokens,
    }
    if stream:
        params["stream"] = True
        return _ChunkStream(params)
    reply = _call("call_llm", params)
    if not reply.get("ok"):
        kind, message = _error_of(reply)
        raise LLMError(kind, message)
    result = reply.get("result")
    if not isinstance(result, dict) or not isinstance(result.get("text"), str):
        raise HubError("call_llm: malformed reply from the hub")
    text: str = result["text"]
    return text


def call_agent(agent_id: str, input_data: Any) -> dict[str, Any]:
    """Invoke another agent on the hub with ``input_data`` (JSON-serialisable) and return its result."""
    _require_ws("call_agent")
    if not isinstance(agent_id, str) or not agent_id:
        raise ValueError("agent_id must be a non-empty str")
    try:
        json.dumps(input_data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"input_data must be JSON-serialisable: {exc}") from None
    reply = _call("call_agent", {"agent_id": agent_id, "input": input_data})
    if not reply.get("ok"):
        kind, message = _error_of(reply)
        error = HubError(f"call_agent failed ({kind}): {message}")
        error.kind = kind
        raise error
    result = reply.get("result")
    if not isinstance(result, dict):
        raise HubError("call_agent: malformed reply from the hub")
    return result


class _Headers(dict[str, str]):
    """A response's headers: a dict of str whose lookups ignore case (``r.headers["content-type"]``)."""

    def _key(self, key: str) -> str:
        if not super().__contains__(key):
            for k in self:
                if k.lower() == key.lower():
                    return k
        return key

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(self._key(key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(self._key(key))

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(self._key(key), default)


class HttpResponse:
    """What ``http`` returns: ``status``, ``reason``, ``headers`` (a dict, lookups ignore case), ``text``,
    ``json()``, ``url`` (the final one, after redirects), ``ok``, ``elapsed_ms``, ``size`` (body bytes) and
    ``redirects``. Wherever the server repeated one of the agent's secrets, ``[redacted]`` stands instead."""

    def __init__(self, result: dict[str, Any]) -> None:
        self.status = int(result.get("status") or 0)
        self.reason = str(result.get("reason") or "")
        self.headers: dict[str, str] = _Headers({str(k): str(v) for k, v in dict(result.get("headers") or {}).items()})
        self.text = str(result.get("text") or "")
        self.url = str(result.get("url") or "")
        self.elapsed_ms = int(result.get("elapsed_ms") or 0)
        self.size = int(result.get("size") or 0)
        self.redirects = int(result.get("redirects") or 0)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not JSON)."""
        return json.loads(self.text)

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} {self.reason}, {self.size} bytes>"


def _http_argument(name: str, value: Any) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise HttpError("bad_request", f"{name} is not JSON-serialisable: {exc}") from None


def http(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    json: Any = None,
    data: str | dict[str, str] | None = None,
    timeout: float | None = None,
) -> HttpResponse:
    """Make an HTTP request through the hub (the sandbox has no network) and return its response.

    Write ``{{SECRET_NAME}}`` in the url, a header, a param or the body where one of the agent's ``SECRET_*``
    env vars belongs: the hub puts the value in, and masks it in the response. The hub's operator
    (``HUB_HTTP_ALLOW_HOSTS``) and the agent's own ``HUB_HTTP_ALLOW`` env var must both allow the host.
    ``json`` (any JSON value) or ``data`` (a str body, or a dict sent as a form), not both; ``timeout`` in
    seconds (at most the hub's, within the run's time left). Raises ``HttpError`` (with ``.kind``) when the call
    fails, ``HubError`` on the batch transport.
    """
    _require_ws("http")
    if not isinstance(method, str) or not isinstance(url, str):
        raise HttpError("bad_request", "method and url must be str")
    for name, value in (("headers", headers), ("params", params), ("json", json), ("data", data)):
        _http_argument(name, value)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
        raise HttpError("bad_request", "timeout must be a number of seconds, or None")
    reply = _call("http", {"method": method, "url": url, "headers": headers, "params": params, "json": json,
                           "data": data, "timeout": None if timeout is None else float(timeout)})
    if not reply.get("ok"):
        kind, message = _error_of(reply)
        raise HttpError(kind, message)
    result = reply.get("result")
    if not isinstance(result, dict):
        raise HubError("http: malformed reply from the hub")
    return HttpResponse(result)


def _require_ws(name: str) -> None:
    if _context.get("transport") != "ws":
        raise HubError(_WS_ONLY.format(name=name))


def _error_of(reply: dict[str, Any]) -> tuple[str, str]:
    error = reply.get("error")
    if not isinstance(error, dict):
        return "unknown", "the hub reported an error without details"
    return str(error.get("kind") or "unknown"), str(error.get("message") or "")


def _call(method: str, params: dict[str, Any]) -> dict[str, Any]:
    with _ids_lock:
        call_id = next(_ids)
    with _replies_cond:
        _pending.add(call_id)
    try:
        _emit({"type": "call", "id": call_id, "method": method, "params": params})
        return _await_reply(call_id)
    finally:
        with _replies_cond:
            _pending.discard(call_id)
            _replies.pop(call_id, None)


def _await_reply(call_id: int) -> dict[str, Any]:
    """Wait for the reply to ``call_id``. One thread at a time reads stdin and hands out other threads' replies."""
    global _reader_active
    with _replies_cond:
        while True:
            if _replies.get(call_id):
                return _replies[call_id].pop(0)
            if not _reader_active:
                _reader_active = True
                break
            _replies_cond.wait()
    try:
        stream = _in if _in is not None else sys.stdin
        while True:
            line = stream.readline()
            if not line:
                raise HubError("the hub closed the reply channel (stdin) before answering")
            reply = _parse_reply(line)
            if reply is None:
                continue
            with _replies_cond:
                if reply["id"] == call_id:
                    return reply
                if reply["id"] in _pending:
                    _replies.setdefault(reply["id"], []).append(reply)
                    _replies_cond.notify_all()
    finally:
        with _replies_cond:
            _reader_active = False
            _replies_cond.notify_all()


class _ChunkStream:
    """``call_llm(..., stream=True)``: iterates over the answer's chunks as the hub relays them (``chunk`` reply
    lines), until the final reply; an error reply raises ``LLMError``. ``text``: the chunks so far."""

    def __init__(self, params: dict[str, Any]) -> None:
        with _ids_lock:
            self._id = next(_ids)
        with _replies_cond:
            _pending.add(self._id)
        self._done = False
        self._parts: list[str] = []
        try:
            _emit({"type": "call", "id": self._id, "method": "call_llm", "params": params})
        except BaseException:
            self._finish()
            raise

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def __iter__(self) -> _ChunkStream:
        return self

    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        try:
            reply = _await_reply(self._id)
        except BaseException:
            self._finish()
            raise
        if reply.get("ok") and isinstance(reply.get("chunk"), str):
            chunk: str = reply["chunk"]
            self._parts.append(chunk)
            return chunk
        self._finish()
        if not reply.get("ok"):
            kind, message = _error_of(reply)
            raise LLMError(kind, message)
        result = reply.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("text"), str):
            raise HubError("call_llm: malformed reply from the hub")
        raise StopIteration

    def _finish(self) -> None:
        self._done = True
        with _replies_cond:
            _pending.discard(self._id)
            _replies.pop(self._id, None)

    def close(self) -> None:
        """Stop reading (the hub's further chunks for this call are ignored)."""
        if not self._done:
            self._finish()

    def __del__(self) -> None:
        # Also at interpreter exit, when this module's globals (contextlib included) may be gone already.
        try:  # noqa: SIM105
            self.close()
        except Exception:
            pass


def _parse_reply(line: str) -> dict[str, Any] | None:
    try:
        reply = json.loads(line)
    except ValueError:
        return None
    if not isinstance(reply, dict) or isinstance(reply.get("id"), bool) or not isinstance(reply.get("id"), int):
        return None
    return reply
