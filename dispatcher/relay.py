"""The event relay: an agent's stdout, decoded into hub events, each turned into its write or reply.

One relay per try of a run (message sequence numbers restart at 1 on every try, so the messages a
failed try already wrote are recognised by their ids and not duplicated). It is the sandbox request's
``on_stdout`` hook; ``close`` flushes what the decoder still holds once the run is over.

A streaming message (``delta`` lines) takes its sequence number at its first chunk; its chunks go to the feed
as ``delta`` events (dispatcher/deltas.py) under the id the ChatMessage will have, and the ChatMessage with
the whole text is written at its final chunk, or at ``close`` with a JobLog line saying it was cut when the run
ended first (not when the run is handed to another try, which sends the message again under the same id).

A streaming call (``call_llm`` with ``stream: true``) is answered in a thread of its own, so the relay goes on
reading the agent's lines (e.g. the deltas of the answer being forwarded) while the chunks come in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import structlog

from dispatcher import protocol
from dispatcher.calls import CallRouter, CallScope
from dispatcher.control import StopReason
from dispatcher.deltas import DeltaBatcher
from dispatcher.runstats import RunStats
from dispatcher.sandbox.port import StdinWriter
from dispatcher.summary import TAIL_CHARS
from dispatcher.writeback import message_id

log = structlog.get_logger("dispatcher.relay")

MAX_PROTOCOL_WARNINGS = 20  # JobLog lines for malformed protocol lines, per run
LOG_LINE_CHARS = 4000       # an agent's hub.log line is cut here
STREAM_JOIN_S = 5.0         # at close, how long a streaming call's thread is waited for
# Stops after which the run goes again (another try or dispatcher): a cut message is not kept, the next run
# sends it whole under the same id.
RERUN_STOPS = frozenset({StopReason.SHUTDOWN, StopReason.LEASE_EXPIRING, StopReason.LEASE_LOST})


@dataclass
class _Streaming:
    """The streaming message in progress."""

    seq: int
    batcher: DeltaBatcher
    parts: list[str] = field(default_factory=list)
    chars: int = 0
    over: bool = False  # past MAX_MESSAGE_CHARS: later chunks are dropped


def line_limit(max_message_chars: int) -> int:
    """Longest protocol line accepted: protocol lines are ASCII with \\uXXXX escapes, so a message of
    non-BMP characters takes up to 12 characters per character, plus the JSON envelope."""
    return 12 * max_message_chars + 4096


@dataclass(frozen=True)
class RelayLimits:
    max_messages: int       # MAX_MESSAGES_PER_RUN
    max_message_chars: int  # MAX_MESSAGE_CHARS


class EventRelay:
    def __init__(self, scope: CallScope, *, nonce: str, limits: RelayLimits, calls: CallRouter) -> None:
        self.scope = scope  # the run as the call handlers see it
        self.wb = scope.wb
        self.control = scope.control
        self.redact = scope.redact
        self.stats: RunStats = scope.stats
        self.limits = limits
        self.calls = calls
        self.streaming: _Streaming | None = None
        self._call_threads: list[threading.Thread] = []
        self._closed = threading.Event()  # the run is over: a streaming call still going stops at its next chunk
        self.decoder = protocol.StreamDecoder(
            nonce,
            max_line_chars=line_limit(limits.max_message_chars),
            max_output_chars=TAIL_CHARS * 4,
            max_message_chars=limits.max_message_chars,
        )

    def on_stdout(self, chunk: str, stdin: StdinWriter) -> None:
        self._relay(self.decoder.feed(chunk), stdin)

    def close(self) -> RunStats:
        """The run is over: relay what the decoder still held (no one waits for a reply now), end a streaming
        call's thread and keep a streaming message that was cut."""
        self._relay(self.decoder.close(), None)
        self._closed.set()
        for thread in self._call_threads:
            thread.join(STREAM_JOIN_S)
        if self.streaming is not None:
            self._cut()
        self.stats.output_tail = self.redact.tail(self.decoder.output, TAIL_CHARS)
        self.stats.output_truncated = self.decoder.output_truncated
        return self.stats

    def _relay(self, events: list[protocol.Event], stdin: StdinWriter | None) -> None:
        for event in events:
            if self.control.should_stop():
                return
            match event:
                case protocol.Message():
                    self._message(event)
                case protocol.Progress():
                    self.wb.progress(event.percent, None if event.message is None else self.redact(event.message))
                case protocol.SetUserVar():
                    self._user_var(event)
                case protocol.Log():
                    self.wb.log(event.level, self.redact.head(f"agent: {event.message}", LOG_LINE_CHARS))
                case protocol.Delta():
                    self._delta(event)
                case protocol.Call():
                    if stdin is not None:  # None: the run is over, nobody waits for a reply
                        if protocol.is_streaming(event):
                            self._stream_call(event, stdin)
                        else:
                            stdin.write(self.calls.answer(event, self.scope))
                case protocol.ProtocolError():
                    self._protocol_error(event, stdin)

    def _message(self, event: protocol.Message) -> None:
        self.stats.messages += 1
        if self.stats.messages > self.limits.max_messages:
            self.control.stop(StopReason.MESSAGE_CAP)
            return
        self.wb.message(self.stats.messages, event.content)

    def _delta(self, event: protocol.Delta) -> None:
        if self.streaming is None:
            self.stats.messages += 1
            if self.stats.messages > self.limits.max_messages:
                self.control.stop(StopReason.MESSAGE_CAP)
                return
            mid = message_id(self.wb.job_id, self.stats.messages)
            self.streaming = _Streaming(self.stats.messages, DeltaBatcher(
                lambda index, text: self.wb.deltas(mid, index, [text])))
        s = self.streaming
        text = event.text
        if not s.over and s.chars + len(text) > self.limits.max_message_chars:
            text = text[: self.limits.max_message_chars - s.chars]
            s.over = True
            self.wb.log("warning", f"a streamed message went over MAX_MESSAGE_CHARS ({self.limits.max_message_chars}); "
                                   "the rest was dropped")
        elif s.over:
            text = ""
        if text:
            s.parts.append(text)
            s.chars += len(text)
            s.batcher.add(text)
        if event.final:
            self._end_streaming()

    def _end_streaming(self) -> None:
        s = self.streaming
        assert s is not None
        self.streaming = None
        s.batcher.close()  # its deltas are queued before the message on the run's writer: they commit first
        self.wb.message(s.seq, "".join(s.parts))

    def _cut(self) -> None:
        s = self.streaming
        assert s is not None
        if self.control.reason in RERUN_STOPS:
            self.streaming = None
            s.batcher.close()
            return
        self.wb.log("warning", f"message {s.seq} was cut: the run ended after {len(s.parts)} streamed chunk(s) "
                               f"({s.chars} characters) before the agent finished it; what came is kept")
        self._end_streaming()

    def _stream_call(self, event: protocol.Call, stdin: StdinWriter) -> None:
        """Answer a streaming call in its own thread: chunk lines, then the final reply, on the agent's stdin."""
        def partial(line: str) -> None:
            if self._closed.is_set():  # the agent is gone: stop asking the model (its call is recorded as stopped)
                raise RuntimeError("the run is over")
            stdin.write(line)

        def answer() -> None:
            try:
                stdin.write(self.calls.answer(event, self.scope, partial=partial))
            except Exception as exc:  # the agent's stdin is gone: the run is over, nobody waits for the reply
                log.info("stream_reply_not_sent", error=type(exc).__name__)

        thread = threading.Thread(target=answer, name="hub-stream-call", daemon=True)
        self._call_threads.append(thread)
        thread.start()

    def _user_var(self, event: protocol.SetUserVar) -> None:
        if not self.wb.user_var(event.key, event.value):
            self.wb.log("warning", f"set_user_var({event.key!r}) ignored: this invocation has no session")

    def _protocol_error(self, event: protocol.ProtocolError, stdin: StdinWriter | None) -> None:
        self.stats.protocol_errors += 1
        if event.call_id is not None and stdin is not None:
            # The agent is blocked on this call: answer it, or it waits until its time limit.
            stdin.write(protocol.encode_reply(event.call_id, False,
                                              error={"kind": "invalid_request", "message": event.reason}))
        if self.stats.protocol_errors <= MAX_PROTOCOL_WARNINGS:
            self.wb.log("warning", self.redact(f"ignored a malformed hub line: {event.reason}"))
