"""The stdout line protocol: StreamDecoder and encode_reply."""

from __future__ import annotations

import json
import tracemalloc

from dispatcher.protocol import (
    Call,
    CallMethod,
    Log,
    LogLevel,
    Message,
    Progress,
    ProtocolError,
    SetUserVar,
    StreamDecoder,
    encode_reply,
    protocol_prefix,
)

NONCE = "n0nce42"


def line(obj: object, nonce: str = NONCE) -> str:
    return protocol_prefix(nonce) + json.dumps(obj) + "\n"


def decoder(**caps: int) -> StreamDecoder:
    limits = {"max_line_chars": 10_000, "max_output_chars": 1_000, "max_message_chars": 5_000}
    limits.update(caps)
    return StreamDecoder(NONCE, **limits)


def feed_all(dec: StreamDecoder, chunks: list[str]) -> list[object]:
    events: list[object] = []
    for chunk in chunks:
        events.extend(dec.feed(chunk))
    events.extend(dec.close())
    return events


STREAM = (
    "starting\n"
    + line({"type": "message", "content": "héllo ☃ 😀"})
    + "partial"
    + "\n"
    + line({"type": "progress", "percent": 50, "message": "half"})
    + line({"type": "user_var", "key": "k", "value": "v"})
    + line({"type": "log", "level": "warning", "message": "careful"})
    + line({"type": "call", "id": 7, "method": "call_llm", "params": {"prompt": "hi"}})
    + "\x1ehub\n"
    + "done"
)

EXPECTED = [
    Message("héllo ☃ 😀"),
    Progress(50.0, "half"),
    SetUserVar("k", "v"),
    Log(LogLevel.WARNING, "careful"),
    Call(7, CallMethod.CALL_LLM, {"prompt": "hi"}),
]


def test_whole_stream_decodes_every_event_type_and_keeps_plain_output() -> None:
    dec = decoder()
    assert feed_all(dec, [STREAM]) == EXPECTED
    assert dec.output == "starting\npartial\n\x1ehub\ndone"


def test_byte_by_byte_feeding_gives_the_same_events_and_output_as_one_chunk() -> None:
    dec = decoder()
    assert feed_all(dec, list(STREAM)) == EXPECTED
    assert dec.output == "starting\npartial\n\x1ehub\ndone"


def test_every_two_way_split_gives_the_same_events() -> None:
    for cut in range(len(STREAM) + 1):
        assert feed_all(decoder(), [STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


def test_chunk_ending_mid_marker_is_completed_by_the_next_chunk() -> None:
    text = line({"type": "message", "content": "x"})
    dec = decoder()
    assert dec.feed(text[:3]) == []
    assert dec.feed(text[3:9]) == []
    assert dec.feed(text[9:]) == [Message("x")]
    assert dec.output == ""


def test_several_lines_in_one_chunk_yield_events_in_order() -> None:
    chunk = "".join(line({"type": "message", "content": str(i)}) for i in range(5))
    assert decoder().feed(chunk) == [Message(str(i)) for i in range(5)]


def test_final_line_without_newline_is_decoded_on_close() -> None:
    dec = decoder()
    assert dec.feed(line({"type": "message", "content": "last"}).rstrip("\n")) == []
    assert dec.close() == [Message("last")]


def test_marker_with_wrong_nonce_is_plain_output_not_a_message() -> None:
    forged = line({"type": "message", "content": "forged"}, nonce="guess")
    dec = decoder()
    assert feed_all(dec, [forged]) == []
    assert dec.output == forged


def test_plain_json_print_is_output_not_a_message() -> None:
    dec = decoder()
    printed = json.dumps({"type": "message", "content": "hi"}) + "\n"
    assert feed_all(dec, [printed]) == []
    assert dec.output == printed


def test_marker_not_at_line_start_is_plain_output() -> None:
    dec = decoder()
    text = "say " + line({"type": "message", "content": "x"})
    assert feed_all(dec, [text]) == []
    assert dec.output == text


def test_malformed_protocol_lines_give_protocol_errors_without_echoing_content() -> None:
    prefix = protocol_prefix(NONCE)
    bad = [
        prefix + "{not json" + "x" * 500 + "\n",
        prefix + "[1, 2]\n",
        line({"type": "nope"}),
        line({"type": "message", "content": 5}),
        line({"type": "progress", "percent": 101}),
        line({"type": "progress", "percent": True}),
        prefix + '{"type": "progress", "percent": NaN}\n',
        line({"type": "progress", "percent": 1, "message": 3}),
        line({"type": "user_var", "key": "", "value": "v"}),
        line({"type": "user_var", "key": "k", "value": 1}),
        line({"type": "log", "level": "loud", "message": "m"}),
        line({"type": "call", "id": "1", "method": "call_llm", "params": {}}),
        line({"type": "call", "id": 1, "method": "rm_rf", "params": {}}),
        line({"type": "call", "id": 1, "method": "call_llm", "params": []}),
        prefix + "\n",
    ]
    events = feed_all(decoder(), bad)
    assert len(events) == len(bad)
    assert all(isinstance(e, ProtocolError) for e in events), events
    assert all(len(e.reason) < 140 for e in events if isinstance(e, ProtocolError))


def test_rejected_call_with_a_usable_id_carries_the_id_so_it_can_be_answered() -> None:
    events = feed_all(decoder(), [
        line({"type": "call", "id": 9, "method": "rm_rf", "params": {}}),
        line({"type": "call", "id": 10, "method": "call_llm", "params": "x"}),
        line({"type": "call", "id": None, "method": "call_llm", "params": {}}),
    ])
    assert [e.call_id for e in events if isinstance(e, ProtocolError)] == [9, 10, None]


def test_message_over_the_size_cap_is_a_protocol_error() -> None:
    dec = decoder(max_message_chars=100)
    events = feed_all(dec, [line({"type": "message", "content": "a" * 101}), line({"type": "message", "content": "a" * 100})])
    assert isinstance(events[0], ProtocolError)
    assert "100" in events[0].reason
    assert events[1] == Message("a" * 100)


def test_ten_megabyte_protocol_line_yields_one_error_and_memory_stays_bounded() -> None:
    dec = decoder(max_line_chars=100_000, max_output_chars=10_000)
    big = protocol_prefix(NONCE) + '{"type":"message","content":"' + "x" * 10_000_000 + '"}\n'
    tail = line({"type": "message", "content": "after"})
    tracemalloc.start()
    events: list[object] = []
    for i in range(0, len(big), 65536):
        events.extend(dec.feed(big[i : i + 65536]))
        assert dec._line_len <= 100_000 + 65536
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    events.extend(dec.feed(tail))
    assert events == [ProtocolError("line over 100000 characters"), Message("after")]
    assert peak < 2_000_000
    assert dec.output == ""


def test_ten_megabyte_plain_line_streams_into_output_keeping_the_tail() -> None:
    dec = decoder(max_line_chars=100_000, max_output_chars=10_000)
    big = "".join(f"{i:09d}," for i in range(1_000_000)) + "\n"
    tracemalloc.start()
    events: list[object] = []
    for i in range(0, len(big), 65536):
        events.extend(dec.feed(big[i : i + 65536]))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert events == []
    assert peak < 2_000_000
    assert dec.output == big[-10_000:]
    assert dec.output_truncated
    assert dec.output_chars_total == len(big)


def test_output_cap_keeps_the_most_recent_output() -> None:
    dec = decoder(max_output_chars=50)
    text = "".join(f"line {i}\n" for i in range(100))
    feed_all(dec, [text[i : i + 7] for i in range(0, len(text), 7)])
    assert dec.output == text[-50:]
    assert dec.output_truncated
    assert dec.output_chars_total == len(text)


def test_output_under_the_cap_is_not_marked_truncated() -> None:
    dec = decoder(max_output_chars=50)
    feed_all(dec, ["short\n"])
    assert not dec.output_truncated
    assert dec.output_chars_total == 6


def test_protocol_lines_do_not_count_as_output() -> None:
    dec = decoder()
    feed_all(dec, [line({"type": "message", "content": "x" * 300})])
    assert dec.output_chars_total == 0


def test_unicode_escapes_and_raw_unicode_both_decode() -> None:
    raw = protocol_prefix(NONCE) + json.dumps({"type": "message", "content": "日本語 \u2028 end"}, ensure_ascii=False) + "\n"
    escaped = line({"type": "message", "content": "日本語 \u2028 end"})
    assert feed_all(decoder(), [raw, escaped]) == [Message("日本語 \u2028 end")] * 2


def test_nul_and_lone_surrogates_are_made_storable() -> None:
    events = feed_all(decoder(), [protocol_prefix(NONCE) + '{"type":"message","content":"a\\u0000b\\ud800c"}\n'])
    assert events == [Message("a\ufffdb\ufffdc")]


def test_progress_message_may_be_null() -> None:
    assert feed_all(decoder(), [line({"type": "progress", "percent": 0, "message": None})]) == [Progress(0.0, None)]


def test_encode_reply_is_one_ascii_json_line() -> None:
    ok = encode_reply(3, True, {"text": "é\n\u2028"})
    assert ok.endswith("\n") and ok.count("\n") == 1 and ok.isascii()
    assert json.loads(ok) == {"id": 3, "ok": True, "result": {"text": "é\n\u2028"}}
    err = encode_reply(4, False, error={"kind": "quota", "message": "slow down"})
    assert json.loads(err) == {"id": 4, "ok": False, "error": {"kind": "quota", "message": "slow down"}}
