"""ingress.body: the body read within a limit, and the unread rest discarded up to the drain limit."""

from __future__ import annotations

import io
from typing import Any

import pytest
from werkzeug.exceptions import RequestEntityTooLarge

from ingress.body import DRAIN_FLOOR_BYTES, RequestBody, drain_limit


def environ(data: bytes, *, chunked: bool = False) -> dict[str, Any]:
    env: dict[str, Any] = {"wsgi.input": io.BytesIO(data)}
    if chunked:  # what gunicorn says of a chunked body: it ends the stream itself, no Content-Length
        env.update({"wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"})
    else:
        env["CONTENT_LENGTH"] = str(len(data))
    return env


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_within_the_limit_is_read_whole(chunked: bool) -> None:
    data = b"x" * 1000
    assert RequestBody(environ(data, chunked=chunked)).read(1000) == data


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_one_byte_over_the_limit_is_413(chunked: bool) -> None:
    # werkzeug's own limit stops a chunked body at the limit without an error: the JSON came out truncated.
    with pytest.raises(RequestEntityTooLarge):
        RequestBody(environ(b"x" * 1001, chunked=chunked)).read(1000)


def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    env = environ(b"x" * 1001)
    body = RequestBody(env)
    with pytest.raises(RequestEntityTooLarge):
        body.read(1000)
    assert body.read_bytes == 0


@pytest.mark.parametrize("chunked", [False, True])
def test_discard_reads_the_rest_after_a_413_and_says_the_body_ended(chunked: bool) -> None:
    env = environ(b"x" * 50_000, chunked=chunked)
    with pytest.raises(RequestEntityTooLarge):
        RequestBody.of(env).read(1000)
    assert RequestBody.of(env).discard(100_000) is True
    assert env["wsgi.input"].read() == b""
    assert RequestBody.of(env).read_bytes == 50_000


def test_discard_of_a_chunked_body_stops_at_the_limit() -> None:
    env = environ(b"x" * 50_000, chunked=True)
    body = RequestBody.of(env)
    assert body.discard(20_000) is False
    assert body.read_bytes == 20_000


def test_discard_does_not_start_on_a_body_declared_past_the_limit() -> None:
    env = environ(b"x" * 50_000)
    body = RequestBody.of(env)
    assert body.discard(20_000) is False
    assert body.read_bytes == 0


def test_discard_of_an_empty_or_fully_read_body_is_true() -> None:
    assert RequestBody(environ(b"")).discard(10) is True
    env = environ(b"{}")
    assert RequestBody.of(env).read(10) == b"{}"
    assert RequestBody.of(env).discard(10) is True


def test_drain_limit_is_16_mib_or_four_bodies() -> None:
    assert drain_limit(256 * 1024) == DRAIN_FLOOR_BYTES == 16 * 1024 * 1024
    assert drain_limit(8 * 1024 * 1024) == 32 * 1024 * 1024
