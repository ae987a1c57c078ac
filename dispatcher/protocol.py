"""The line protocol between an agent's ``hub`` module (inside Piston) and the dispatcher.

The sandbox has no network. The agent talks to the dispatcher only through its stdout, and
(WebSocket transport only) hears back through its stdin.

Agent → dispatcher (stdout). A protocol line is::

    "\\x1ehub:" + nonce + ":" + json + "\\n"

``nonce`` is a random per-run token embedded in the run's context, so text an agent prints
(JSON included) is never taken for a message; a marker line with another nonce is plain output.
The marker must start the line: the hub writes a "\\n" first when the agent left a partial line.
The JSON is one object, ASCII-only (``ensure_ascii``), with a ``type``:

- ``{"type": "message", "content": str}``                          → a chat message from the agent
- ``{"type": "progress", "percent": 0..100, "message": str|null}``  → job progress
- ``{"type": "user_var", "key": str (non-empty), "value": str}``    → set a session user variable
- ``{"type": "log", "level": "debug"|"info"|"warning"|"error", "message": str}`` → a job log line
- ``{"type": "delta", "text": str, "final": bool}`` → a chunk of a streaming message (``hub.send_message``
  with an iterable): the chunks of one message follow each other, the one with ``final: true`` (its text may
  be empty) ends it; the dispatcher then writes the whole text as one ChatMessage (``delta`` feed events
  carry the chunks to listeners meanwhile). A run that ends before the final chunk keeps what came, as its
  message, with a JobLog line saying it was cut.
- ``{"type": "call", "id": int, "method": "call_llm"|"call_agent"|"http", "params": {...}}`` → a request
  that blocks the agent until a reply line arrives on its stdin. ``call_llm`` params:
  ``prompt`` (str), ``system`` (str|null), ``history`` (bool), ``model`` (str|null),
  ``temperature`` (number|null), ``max_output_tokens`` (int|null), ``stream`` (bool, optional: the answer
  comes as chunk lines, below). ``call_agent`` params:
  ``agent_id`` (str), ``input`` (any JSON). ``http`` params: ``method``, ``url`` (str), ``headers``,
  ``params`` (object|null), ``json`` (any JSON) or ``data`` (str|object), ``timeout`` (number|null).

Dispatcher → agent (stdin), one JSON object per line (see ``encode_reply``)::

    {"id": int, "ok": true, "result": ...}        call_llm's result is {"text": str}; call_agent's a dict;
                                                  http's {"status", "reason", "headers", "text", "url", ...}
    {"id": int, "ok": false, "error": {"kind": str, "message": str}}

A streaming call (``call_llm`` with ``"stream": true``) gets any number of chunk lines before that final reply
(which has the whole text, or the error that ended the stream)::

    {"id": int, "ok": true, "chunk": str}

Dispatcher → agent (stdin), control lines, marked like the agent's own lines (see ``encode_control``)::

    "\\x1ehub:" + nonce + ":" + {"type": "cancel"} + "\\n"

On the WebSocket transport the hub reads stdin in a background thread from the start of the run, so a
``cancel`` line ends the agent's process at once (exit status ``CANCEL_EXIT_STATUS``) even while it
computes or waits; a control line with another nonce, or of another type, is ignored.

The hub ignores reply lines that are not JSON or answer no pending call. A call line the decoder
rejects but whose id it could read gives ``ProtocolError.call_id``: answer it with an error reply,
or the agent waits until its time limit.

Optional context key ``limits`` = ``{"max_line_chars": int, "max_message_chars": int}``: when the
dispatcher puts its decoder's caps there, the hub raises ``HubError`` in the agent instead of
writing a line the decoder would reject. Protocol lines are ASCII, so a non-ASCII character
takes 6 characters of a line (12 outside the BMP): size ``max_line_chars`` accordingly.

Everything else on stdout is the agent's ordinary output. ``StreamDecoder`` turns the stdout
stream, in whatever chunks it arrives, into typed events and a bounded tail of that output.
Strings in events are made storable in Postgres: NUL and lone surrogates become U+FFFD.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MARKER = "\x1ehub:"
PROTOCOL_VERSION = 1
CANCEL = "cancel"  # the control line that ends the agent's process
CANCEL_EXIT_STATUS = 143  # the agent's exit status after a cancel line (as a SIGTERM would leave it)


class EventType(StrEnum):
    MESSAGE = "message"
    PROGRESS = "progress"
    USER_VAR = "user_var"
    LOG = "log"
    CALL = "call"
    DELTA = "delta"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class CallMethod(StrEnum):
    CALL_LLM = "call_llm"
    CALL_AGENT = "call_agent"
    HTTP = "http"


class Transport(StrEnum):
    """The value of the context's ``transport`` key."""

    WS = "ws"
    EXECUTE = "execute"


@dataclass(frozen=True)
class Message:
    content: str


@dataclass(frozen=True)
class Progress:
    percent: float
    message: str | None


@dataclass(frozen=True)
class SetUserVar:
    key: str
    value: str


@dataclass(frozen=True)
class Log:
    level: LogLevel
    message: str


@dataclass(frozen=True)
class Delta:
    """A chunk of the agent's streaming message; ``final``: the message ends with it."""

    text: str
    final: bool = False


@dataclass(frozen=True)
class Call:
    id: int
    method: CallMethod
    params: dict[str, Any]


@dataclass(frozen=True)
class ProtocolError:
    """A protocol line that could not be used; ``reason`` never echoes long content.

    ``call_id`` is set when a rejected line was a call with a usable id: the agent is blocked
    waiting for that id, so the dispatcher should answer it with an error reply.
    """

    reason: str
    call_id: int | None = None


Event = Message | Progress | SetUserVar | Log | Call | Delta | ProtocolError


def protocol_prefix(nonce: str) -> str:
    """What every protocol line of this run starts with."""
    return f"{MARKER}{nonce}:"


def clean_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD, so Postgres can store it."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def encode_reply(id: int, ok: bool, result: Any = None, error: dict[str, str] | None = None) -> str:
    """The stdin line answering call ``id``: ``result`` when ok, else ``error`` = {"kind", "message"}."""
    if ok:
        body: dict[str, Any] = {"id": id, "ok": True, "result": result}
    else:
        err = error or {}
        detail = {"kind": str(err.get("kind") or "error"), "message": str(err.get("message") or "")}
        body = {"id": id, "ok": False, "error": detail}
    # ASCII-only: no character inside the JSON can end the line early on the agent's side.
    return json.dumps(body, ensure_ascii=True, separators=(",", ":"), default=str) + "\n"


def encode_chunk(id: int, text: str) -> str:
    """A stdin line carrying one chunk of streaming call ``id``'s answer (its final reply comes later)."""
    return json.dumps({"id": id, "ok": True, "chunk": text}, ensure_ascii=True, separators=(",", ":")) + "\n"


def is_streaming(call: Call) -> bool:
    """A call whose answer is to come as chunk lines before the final reply (call_llm with ``stream: true``)."""
    return call.method is CallMethod.CALL_LLM and call.params.get("stream") is True


def encode_control(nonce: str, kind: str = CANCEL) -> str:
    """The stdin control line of the run with ``nonce``: ``cancel`` ends the agent's process at once."""
    return protocol_prefix(nonce) + json.dumps({"type": kind}, separators=(",", ":")) + "\n"


def _short(value: object, limit: int = 40) -> str:
    # Whole or not at all: a cut-off value could be part of a secret that the redactor no longer recognises.
    text = repr(value)
    return text if len(text) <= limit else f"a {type(value).__name__} of {len(text)} characters"


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


class StreamDecoder:
    """Splits an agent's stdout, fed in arbitrary chunks, into protocol events and plain output.

    Memory stays bounded whatever the agent prints: plain output is streamed into a buffer that
    keeps only its newest ``max_output_chars`` characters, and a protocol line is buffered only up
    to ``max_line_chars`` (past that: one ``ProtocolError`` and the rest of the line is dropped).
    """

    def __init__(self, nonce: str, *, max_line_chars: int, max_output_chars: int, max_message_chars: int) -> None:
        if not nonce:
            raise ValueError("nonce must be non-empty")
        self._prefix = protocol_prefix(nonce)
        self._max_line = max_line_chars
        self._max_output = max_output_chars
        self._max_message = max_message_chars
        # The current line, when it is (or may still become) a protocol line.
        self._line: list[str] = []
        self._line_len = 0
        # The current line starts with this run's protocol prefix.
        self._confirmed = False
        # The current line is plain output (already streamed to the output buffer).
        self._plain = False
        # The current line is an over-long protocol line being dropped up to its newline.
        self._discarding = False
        self._out: list[str] = []
        self._out_len = 0
        self.output_chars_total = 0

    # --- output buffer ---------------------------------------------------------------------

    @property
    def output(self) -> str:
        """The newest ``max_output_chars`` characters of plain output."""
        text = "".join(self._out)
        if len(text) > self._max_output:
            text = text[len(text) - self._max_output :] if self._max_output else ""
        self._out = [text] if text else []
        self._out_len = len(text)
        return clean_text(text)

    @property
    def output_truncated(self) -> bool:
        """True when older output was dropped to keep the buffer within ``max_output_chars``."""
        return self.output_chars_total > self._max_output

    def _append_output(self, text: str) -> None:
        if not text:
            return
        self.output_chars_total += len(text)
        if len(text) >= self._max_output:
            self._out = [text[len(text) - self._max_output :]] if self._max_output else []
            self._out_len = min(len(text), self._max_output)
            return
        self._out.append(text)
        self._out_len += len(text)
        if self._out_len > 2 * self._max_output:  # compact now and then, not on every append
            joined = "".join(self._out)
            tail = joined[len(joined) - self._max_output :]
            self._out = [tail]
            self._out_len = len(tail)

    # --- feeding ---------------------------------------------------------------------------

    def feed(self, chunk: str) -> list[Event]:
        """Consume the next piece of stdout; return the events of the protocol lines it completed."""
        events: list[Event] = []
        pos = 0
        size = len(chunk)
        while pos < size:
            newline = chunk.find("\n", pos)
            end = size if newline == -1 else newline
            self._take(chunk[pos:end], events)
            if newline == -1:
                break
            self._end_line(events)
            pos = newline + 1
        return events

    def close(self) -> list[Event]:
        """End of stream: a final line without a newline is handled as if it had one."""
        events: list[Event] = []
        if self._line_len or self._plain or self._discarding:
            self._end_line(events, terminated=False)
        return events

    def _take(self, piece: str, events: list[Event]) -> None:
        """Add ``piece`` (no newline in it) to the current line."""
        if not piece or self._discarding:
            return
        if self._plain:
            self._append_output(piece)
            return
        self._line.append(piece)
        self._line_len += len(piece)
        if not self._confirmed:  # until the line holds the whole prefix, it is short: joining is cheap
            head = "".join(self._line)
            self._line = [head]
            n = min(len(head), len(self._prefix))
            if head[:n] != self._prefix[:n]:
                self._become_plain()
                return
            if n < len(self._prefix):
                return
            self._confirmed = True
        if self._line_len > self._max_line:
            events.append(ProtocolError(f"line over {self._max_line} characters"))
            self._line = []
            self._line_len = 0
            self._discarding = True

    def _become_plain(self) -> None:
        self._plain = True
        self._append_output("".join(self._line))
        self._line = []
        self._line_len = 0

    def _end_line(self, events: list[Event], *, terminated: bool = True) -> None:
        if self._plain:
            if terminated:
                self._append_output("\n")
        elif not self._discarding:
            line = "".join(self._line)
            if line.startswith(self._prefix):
                events.append(self._parse(line[len(self._prefix) :]))
            else:  # a short line that was a prefix of the marker so far
                self._append_output(line + "\n" if terminated else line)
        self._line = []
        self._line_len = 0
        self._confirmed = False
        self._plain = False
        self._discarding = False

    # --- parsing ---------------------------------------------------------------------------

    def _parse(self, payload: str) -> Event:
        try:
            obj = json.loads(payload, parse_constant=_reject_constant)
        except ValueError as exc:
            return ProtocolError(f"bad JSON ({str(exc)[:80]})")
        except RecursionError:  # deeply nested arrays: a hostile line must not crash the run
            return ProtocolError("bad JSON (nested too deeply)")
        if not isinstance(obj, dict):
            return ProtocolError(f"expected a JSON object, got {type(obj).__name__}")
        kind = obj.get("type")
        try:
            if kind == EventType.MESSAGE:
                return Message(self._text(obj, "content"))
            if kind == EventType.PROGRESS:
                return self._progress(obj)
            if kind == EventType.USER_VAR:
                key = self._text(obj, "key")
                if not key:
                    return ProtocolError("user_var: key is empty")
                return SetUserVar(key, self._text(obj, "value"))
            if kind == EventType.LOG:
                level = obj.get("level")
                if not isinstance(level, str) or level not in LogLevel.__members__.values():
                    return ProtocolError(f"log: unknown level {_short(level)}")
                return Log(LogLevel(level), self._text(obj, "message"))
            if kind == EventType.CALL:
                return self._call(obj)
            if kind == EventType.DELTA:
                final = obj.get("final", False)
                if not isinstance(final, bool):
                    return ProtocolError("delta: final must be a boolean")
                return Delta(self._text(obj, "text"), final)
        except _FieldError as exc:
            return ProtocolError(f"{kind}: {exc}")
        return ProtocolError(f"unknown type {_short(kind)}")

    def _text(self, obj: dict[str, Any], field: str, *, nullable: bool = False) -> Any:
        value = obj.get(field)
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            raise _FieldError(f"{field} must be a string")
        if len(value) > self._max_message:
            raise _FieldError(f"{field} over {self._max_message} characters ({len(value)})")
        return clean_text(value)

    def _progress(self, obj: dict[str, Any]) -> Event:
        percent = obj.get("percent")
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not math.isfinite(percent):
            return ProtocolError("progress: percent must be a number")
        if not 0 <= percent <= 100:
            return ProtocolError(f"progress: percent {percent!r} outside 0..100")
        return Progress(float(percent), self._text(obj, "message", nullable=True))

    def _call(self, obj: dict[str, Any]) -> Event:
        call_id = obj.get("id")
        if isinstance(call_id, bool) or not isinstance(call_id, int):
            return ProtocolError("call: id must be an integer")
        method = obj.get("method")
        if not isinstance(method, str) or method not in CallMethod.__members__.values():
            return ProtocolError(f"call: unknown method {_short(method)}", call_id)
        params = obj.get("params")
        if not isinstance(params, dict):
            return ProtocolError("call: params must be an object", call_id)
        return Call(call_id, CallMethod(method), params)


class _FieldError(Exception):
    pass
