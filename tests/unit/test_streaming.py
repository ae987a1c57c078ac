"""Streaming on the line protocol: the delta event, chunk replies, the delta batcher, and the SDK's streaming
call_llm / send_message in a real agent process."""

from __future__ import annotations

import threading
from pathlib import Path

from dispatcher.calls import CallRouter, CallScope
from dispatcher.claim import Claimed
from dispatcher.control import RunControl, StopReason
from dispatcher.deltas import DeltaBatcher
from dispatcher.llm import LLMErrorKind
from dispatcher.protocol import (
    Call,
    CallMethod,
    Delta,
    Message,
    ProtocolError,
    StreamDecoder,
    encode_chunk,
    encode_reply,
    is_streaming,
)
from dispatcher.relay import EventRelay, RelayLimits
from dispatcher.runstats import RunStats
from dispatcher.sandbox.port import NoStdin
from dispatcher.writeback import message_id
from hubpy.hub._redact import Redactor
from tests.unit.test_hub_sdk import NONCE, run_agent
from tests.waiting import wait_until


def decode(line: str) -> list[object]:
    dec = StreamDecoder(NONCE, max_line_chars=10_000, max_output_chars=1000, max_message_chars=100)
    return list(dec.feed(f"\x1ehub:{NONCE}:{line}\n"))


def test_delta_lines_decode_with_their_final_flag_and_bad_ones_are_protocol_errors() -> None:
    assert decode('{"type": "delta", "text": "Hel"}') == [Delta("Hel", False)]
    assert decode('{"type": "delta", "text": "", "final": true}') == [Delta("", True)]
    [bad] = decode('{"type": "delta", "text": "x", "final": "yes"}')
    assert isinstance(bad, ProtocolError) and "final" in bad.reason
    [long] = decode('{"type": "delta", "text": "' + "x" * 101 + '"}')
    assert isinstance(long, ProtocolError)


def test_a_chunk_reply_names_its_call_and_only_call_llm_with_stream_true_streams() -> None:
    assert encode_chunk(7, "é") == '{"id":7,"ok":true,"chunk":"\\u00e9"}\n'
    assert is_streaming(Call(1, CallMethod.CALL_LLM, {"prompt": "p", "stream": True}))
    assert not is_streaming(Call(1, CallMethod.CALL_LLM, {"prompt": "p"}))
    assert not is_streaming(Call(1, CallMethod.HTTP, {"stream": True}))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_batcher_writes_a_chunk_after_a_quiet_spell_at_once_and_joins_the_chunks_of_one_window() -> None:
    written: list[tuple[int, str]] = []
    lock = threading.Lock()

    def write(index: int, text: str) -> None:
        with lock:
            written.append((index, text))

    clock = Clock()
    batcher = DeltaBatcher(write, window_s=0.05, clock=clock)
    batcher.add("a")  # nothing written for a while: at once
    assert written == [(0, "a")]
    batcher.add("b")  # within the window: held for the timer
    batcher.add("")
    batcher.add("c")
    assert written == [(0, "a")]
    wait_until(lambda: len(written) == 2, what="the window's timer flush", timeout=2)
    assert written[1] == (1, "bc")
    clock.now += 1  # a quiet spell again
    batcher.add("d")
    assert written[2] == (2, "d")
    batcher.add("e")
    batcher.close()  # flushes what is pending, then refuses more
    batcher.add("f")
    assert written == [(0, "a"), (1, "bc"), (2, "d"), (3, "e")]
    assert batcher.next_index == 4


def test_send_message_of_a_streaming_call_llm_relays_each_chunk_as_a_delta_then_ends_the_message(tmp_path: Path) -> None:
    agent = """\
        import hub
        stream = hub.call_llm("tell me", stream=True)
        text = hub.send_message(stream)
        hub.log(f"{text}|{stream.text}")
    """

    def reply(call: Call) -> str:
        assert call.params["stream"] is True
        return (encode_chunk(call.id, "Hel") + encode_chunk(call.id, "lo ") + encode_chunk(call.id, "wörld")
                + encode_reply(call.id, True, {"text": "Hello wörld"}))

    run = run_agent(tmp_path, {"main.py": agent}, reply=reply)
    assert run.code == 0, run.stderr
    call, *deltas, log = run.events
    assert isinstance(call, Call) and call.params["prompt"] == "tell me"
    assert deltas == [Delta("Hel"), Delta("lo "), Delta("wörld"), Delta("", True)]
    assert getattr(log, "message", None) == "Hello wörld|Hello wörld"


def test_an_error_midway_raises_llm_error_from_the_iterator_and_the_message_ends_with_what_came(tmp_path: Path) -> None:
    agent = """\
        import hub
        try:
            hub.send_message(hub.call_llm("tell me", stream=True))
        except hub.LLMError as e:
            hub.send_message(f"{e.kind}|{e.message}")
    """

    def reply(call: Call) -> str:
        return encode_chunk(call.id, "partial") + encode_reply(
            call.id, False, error={"kind": LLMErrorKind.UNAVAILABLE.value, "message": "the stream broke"})

    run = run_agent(tmp_path, {"main.py": agent}, reply=reply)
    assert run.code == 0, run.stderr
    assert run.events[1:] == [Delta("partial"), Delta("", True), Message("unavailable|the stream broke")]


def test_send_message_of_a_generator_streams_it_and_a_list_is_still_sent_as_json(tmp_path: Path) -> None:
    agent = """\
        import hub
        hub.send_message(w for w in ["a", "b"])
        hub.send_message(["a", "b"])
    """
    run = run_agent(tmp_path, {"main.py": agent})
    assert run.code == 0, run.stderr
    assert run.events == [Delta("a"), Delta("b"), Delta("", True), Message('["a", "b"]')]


# -- the relay: a streaming message from delta lines ---------------------------------------------------------


class FakeWriteBack:
    """The writes a relay makes, recorded in order."""

    def __init__(self) -> None:
        self.job_id = "job-1"
        self.writes: list[tuple[str, object]] = []
        self.lock = threading.Lock()

    def deltas(self, message_id: str, first_index: int, texts: list[str]) -> None:
        with self.lock:
            self.writes.append(("delta", (message_id, first_index, tuple(texts))))

    def message(self, seq: int, content: str) -> bool:
        with self.lock:
            self.writes.append(("message", (seq, content)))
        return True

    def log(self, level: str, message: str) -> None:
        with self.lock:
            self.writes.append(("log", message))


def relay_for(wb: FakeWriteBack, control: RunControl, max_chars: int = 1000) -> EventRelay:
    row = Claimed(id=1, job_id=wb.job_id, agent_id="a", session_id="s", user_id="u", prompt="p", attempts=1,
                  max_attempts=3, job_started=True, job_status_before="QUEUED")
    scope = CallScope(row=row, context={}, wb=wb, control=control, deadline=0.0,  # type: ignore[arg-type]
                      stats=RunStats(), redact=Redactor([]))
    return EventRelay(scope, nonce=NONCE, limits=RelayLimits(max_messages=10, max_message_chars=max_chars),
                      calls=CallRouter())


def feed_lines(relay: EventRelay, *payloads: str) -> None:
    relay.on_stdout("".join(f"\x1ehub:{NONCE}:{p}\n" for p in payloads), NoStdin())


def test_relay_sends_deltas_under_the_messages_future_id_and_writes_the_whole_text_at_the_final_chunk() -> None:
    wb, control = FakeWriteBack(), RunControl()
    relay = relay_for(wb, control)
    feed_lines(relay, '{"type": "message", "content": "first"}', '{"type": "delta", "text": "Hel"}',
               '{"type": "delta", "text": "lo"}', '{"type": "delta", "text": "", "final": true}')
    relay.close()
    mid = message_id(wb.job_id, 2)
    deltas = [w[1] for w in wb.writes if w[0] == "delta"]
    assert "".join("".join(d[2]) for d in deltas) == "Hello"  # type: ignore[index]
    assert [d[1] for d in deltas] == list(range(len(deltas))) and {d[0] for d in deltas} == {mid}  # type: ignore[index]
    assert wb.writes[0] == ("message", (1, "first")) and wb.writes[-1] == ("message", (2, "Hello"))
    assert not [w for w in wb.writes if w[0] == "log"]


def test_relay_keeps_a_cut_streaming_message_with_a_log_line_but_not_when_the_run_goes_again() -> None:
    wb, control = FakeWriteBack(), RunControl()
    relay = relay_for(wb, control)
    feed_lines(relay, '{"type": "delta", "text": "half a"}')
    relay.close()  # the agent died mid-message
    assert wb.writes[-2][0] == "log" and "was cut" in str(wb.writes[-2][1])
    assert wb.writes[-1] == ("message", (1, "half a"))

    wb, control = FakeWriteBack(), RunControl()
    relay = relay_for(wb, control)
    feed_lines(relay, '{"type": "delta", "text": "half a"}')
    control.stop(StopReason.SHUTDOWN)  # released: the next run sends the message again under the same id
    relay.close()
    assert not [w for w in wb.writes if w[0] in ("message", "log")]


def test_relay_caps_a_streamed_message_at_max_message_chars_and_says_so_once() -> None:
    wb, control = FakeWriteBack(), RunControl()
    relay = relay_for(wb, control, max_chars=5)
    feed_lines(relay, '{"type": "delta", "text": "abcd"}', '{"type": "delta", "text": "efgh"}',
               '{"type": "delta", "text": "ijkl"}', '{"type": "delta", "final": true, "text": ""}')
    relay.close()
    assert wb.writes[-1] == ("message", (1, "abcde"))
    assert len([w for w in wb.writes if w[0] == "log" and "MAX_MESSAGE_CHARS" in str(w[1])]) == 1
