"""The redactor masks an agent's env var values, whole, escaped, and cut at a window's edge."""

from __future__ import annotations

import json

from dispatcher import protocol
from hubpy.hub._redact import MASK, Redactor

SECRET = "sk-live-0123456789abcdef"
QUOTED = "p\"a's\\s-secret"


def test_every_occurrence_of_a_secret_is_masked() -> None:
    assert Redactor([SECRET])(f"a {SECRET} b {SECRET}") == f"a {MASK} b {MASK}"


def test_json_and_repr_escaped_forms_are_masked() -> None:
    r = Redactor([QUOTED])
    for text in (json.dumps({"k": QUOTED}), repr(QUOTED), QUOTED):
        assert "secret" not in r(text), r(text)


def test_values_shorter_than_four_characters_are_not_secrets() -> None:
    assert Redactor(["abc", ""])("abc abc") == "abc abc"


def test_tail_redacts_before_cutting() -> None:
    tail = Redactor([SECRET]).tail("a" * 100 + SECRET + "b" * 50, 50 + 12)
    assert tail == "aa" + MASK + "b" * 50


def test_tail_masks_the_end_of_a_secret_cut_upstream() -> None:
    # e.g. the decoder's buffer or Piston's stderr tail already started inside the secret
    tail = Redactor([SECRET]).tail(SECRET[-12:] + "b" * 50, 100)
    assert tail == MASK + "b" * 50


def test_tail_masks_a_secret_cut_at_the_end_of_the_stream() -> None:
    text = "a" * 100 + SECRET[:9]  # e.g. the output cap stopped reading mid-secret
    assert Redactor([SECRET]).tail(text, 50) == "a" * 41 + MASK


def test_head_masks_the_start_of_a_secret_cut_by_the_window() -> None:
    head = Redactor([SECRET]).head("z" * 90 + SECRET, 100)
    assert head == "z" * 90 + MASK


def test_tail_leaves_text_without_secrets_alone() -> None:
    assert Redactor([SECRET]).tail("hello world", 5) == "world"
    assert Redactor([]).head("hello world", 5) == "hello"


def test_deeply_nested_json_on_a_protocol_line_is_a_protocol_error_not_a_crash() -> None:
    decoder = protocol.StreamDecoder("n0nce", max_line_chars=1_000_000, max_output_chars=100, max_message_chars=100)
    events = decoder.feed(protocol.protocol_prefix("n0nce") + "[" * 200_000 + "\n")
    assert len(events) == 1 and isinstance(events[0], protocol.ProtocolError)


def test_a_long_rejected_value_is_never_echoed_in_part() -> None:
    decoder = protocol.StreamDecoder("n0nce", max_line_chars=10_000, max_output_chars=100, max_message_chars=100)
    events = decoder.feed(protocol.protocol_prefix("n0nce") + json.dumps({"type": SECRET * 3}) + "\n")
    assert isinstance(events[0], protocol.ProtocolError)
    assert SECRET[:10] not in events[0].reason, events[0].reason
