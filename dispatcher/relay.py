"""The event relay: an agent's stdout, decoded into hub events, each turned into its write or reply.

One relay per try of a run (message sequence numbers restart at 1 on every try, so the messages a
failed try already wrote are recognised by their ids and not duplicated). It is the sandbox request's
``on_stdout`` hook; ``close`` flushes what the decoder still holds once the run is over.
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher import protocol
from dispatcher.calls import CallRouter, CallScope
from dispatcher.control import StopReason
from dispatcher.runstats import RunStats
from dispatcher.sandbox.port import StdinWriter
from dispatcher.summary import TAIL_CHARS

MAX_PROTOCOL_WARNINGS = 20  # JobLog lines for malformed protocol lines, per run
LOG_LINE_CHARS = 4000       # an agent's hub.log line is cut here


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
        self.decoder = protocol.StreamDecoder(
            nonce,
            max_line_chars=line_limit(limits.max_message_chars),
            max_output_chars=TAIL_CHARS * 4,
            max_message_chars=limits.max_message_chars,
        )

    def on_stdout(self, chunk: str, stdin: StdinWriter) -> None:
        self._relay(self.decoder.feed(chunk), stdin)

    def close(self) -> RunStats:
        """The run is over: relay what the decoder still held (no one waits for a reply now)."""
        self._relay(self.decoder.close(), None)
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
                case protocol.Call():
                    if stdin is not None:  # None: the run is over, nobody waits for a reply
                        stdin.write(self.calls.answer(event, self.scope))
                case protocol.ProtocolError():
                    self._protocol_error(event, stdin)

    def _message(self, event: protocol.Message) -> None:
        self.stats.messages += 1
        if self.stats.messages > self.limits.max_messages:
            self.control.stop(StopReason.MESSAGE_CAP)
            return
        self.wb.message(self.stats.messages, event.content)

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
