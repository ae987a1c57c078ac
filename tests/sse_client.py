"""A small SSE client for the tests: the text/event-stream format parsed as a browser's EventSource does
(https://html.spec.whatwg.org/multipage/server-sent-events.html), over a raw socket or any line iterator.

Raw sockets, not an HTTP library, where a test needs the connection itself: to stop reading (a slow
client), to shrink its receive buffer, or to see the server end the response."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    id: str | None  # None: the event carried no id: field
    event: str      # "message" when no event: field; "comment" for a ": ..." line
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def parse(lines: Iterator[str]) -> Iterator[Event]:
    """Events (and comments, as event "comment") from the stream's lines, without their line ends."""
    event_id: str | None = None
    name, data = "", []
    for line in lines:
        if line == "":
            if data or name:
                yield Event(event_id, name or "message", "\n".join(data))
            event_id, name, data = None, "", []
            continue
        if line.startswith(":"):
            yield Event(None, "comment", line[1:].strip())
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            event_id = value
        elif field == "event":
            name = value
        elif field == "data":
            data.append(value)


class RawStream:
    """GET <path> on a raw socket; the response's status and headers, then its events (chunked body decoded)."""

    def __init__(self, port: int, path: str, headers: dict[str, str] | None = None, *, rcvbuf: int | None = None,
                 timeout: float = 30.0, deadline_s: float = 120.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window it advertises is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n{head}\r\n".encode())
        self._buf = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.ended = False  # the server ended the response (last chunk) or closed the connection
        # However its keep-alives flow, a stream that does not end when a test expects it to fails the test.
        self.deadline = time.monotonic() + deadline_s

    def _fill(self) -> bool:
        if time.monotonic() > self.deadline:
            raise AssertionError("the stream is still open past the test's deadline")
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self._buf += chunk
        return True

    def read_head(self) -> RawStream:
        while b"\r\n\r\n" not in self._buf:
            if not self._fill():
                raise ConnectionError("closed before the response head")
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return self

    def body(self) -> bytes:
        """The rest of a non-stream (JSON) answer."""
        size = int(self.headers.get("content-length", "0"))
        while len(self._buf) < size:
            if not self._fill():
                break
        return self._buf[:size]

    def _chunks(self) -> Iterator[bytes]:
        while True:
            while b"\r\n" not in self._buf:
                if not self._fill():
                    self.ended = True
                    return
            size_line, rest = self._buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                if not self._fill():
                    self.ended = True
                    return
                size_line, rest = self._buf.split(b"\r\n", 1)
            self._buf = rest[size + 2:]
            if size == 0:
                self.ended = True
                return
            yield rest[:size]

    def _lines(self) -> Iterator[str]:
        pending = ""
        for chunk in self._chunks():
            pending += chunk.decode()
            *lines, pending = pending.split("\n")
            yield from lines

    def events(self) -> Iterator[Event]:
        """Every event and comment until the response ends (or the socket times out)."""
        if not self.status:
            self.read_head()
        return parse(self._lines())

    def until(self, stop: Any, timeout: float = 30.0) -> list[Event]:
        """Events (comments left out) up to and including the first for which ``stop(event)`` is true."""
        out: list[Event] = []
        deadline = time.monotonic() + timeout
        for ev in self.events():
            if ev.event != "comment":
                out.append(ev)
                if stop(ev):
                    return out
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"the stream ended or stalled before the awaited event; got {out}")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
