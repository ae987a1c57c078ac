"""The Flask app (the invoke endpoint, probes, metrics) served from the ASGI server, on a thread pool.

A request takes a thread only once its body has arrived: the body is read on the event loop first, up
to ``prebuffer_bytes`` (MAX_BODY_BYTES + 1, so every acceptable body), each part within
``body_timeout_s``, so a client that trickles or stalls its body holds no thread (it gets 408
``request_timeout`` when it stalls). A larger body is passed on as it comes: the app reads what it needs
and, before answering 413, drains the rest (ingress/body.py), the thread pulling each part from the loop.

The environ is what gunicorn gave the app: ``wsgi.input_terminated`` is set, since the server ends the
body itself (chunked bodies have no Content-Length), and the body stream raises OSError when the client
leaves mid-body (ingress/body.py turns it into a disconnect).
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ingress.sse import Receive, Scope, Send

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Input(io.RawIOBase):
    """``wsgi.input``: the part of the body read on the loop, then the rest pulled from it part by part."""

    def __init__(self, head: bytes, more: bool, receive: Receive, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self._buf = bytearray(head)
        self._more = more
        self._receive = receive
        self._loop = loop
        self._timeout_s = timeout_s

    def readable(self) -> bool:
        return True

    def _pull(self) -> None:
        future = asyncio.run_coroutine_threadsafe(_next_part(self._receive), self._loop)
        try:
            part, self._more = future.result(self._timeout_s)
        except Exception as exc:  # a stall, or the loop shutting down
            future.cancel()
            raise OSError("the request body stopped arriving") from exc
        self._buf.extend(part)

    def readinto(self, b: Any) -> int:
        while not self._buf and self._more:
            self._pull()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        del self._buf[:n]
        return n

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        while True:
            end = self._buf.find(b"\n")
            if end >= 0 or not self._more or (limit >= 0 and len(self._buf) >= limit):
                break
            self._pull()
        cut = end + 1 if end >= 0 else len(self._buf)
        if limit >= 0:
            cut = min(cut, limit)
        line = bytes(self._buf[:cut])
        del self._buf[:cut]
        return line


class ClientLeft(Exception):
    pass


async def _next_part(receive: Receive) -> tuple[bytes, bool]:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientLeft()
    return bytes(message.get("body", b"")), bool(message.get("more_body", False))


def _environ(scope: Scope, body: _Input) -> dict[str, Any]:
    server = scope.get("server") or ("localhost", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode().decode("latin-1"),
        "PATH_INFO": scope["path"].encode().decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] or 80),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = str(client[0]), str(client[1])
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").upper().replace("-", "_"), raw_value.decode("latin-1")
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


class WsgiBridge:
    """An ASGI app that runs a WSGI app on ``threads`` threads, reading bodies on the loop first."""

    def __init__(self, app: WSGIApp, *, threads: int, prebuffer_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.prebuffer_bytes = prebuffer_bytes
        self.body_timeout_s = body_timeout_s
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="flask")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = bytearray()
        more = True
        # A body declared too large to be accepted is not read here: the app answers 413, reading only what it needs.
        more_to_read = _declared_length(scope) <= self.prebuffer_bytes
        try:
            while more_to_read and more and len(head) <= self.prebuffer_bytes:
                async with asyncio.timeout(self.body_timeout_s):
                    part, more = await _next_part(receive)
                head.extend(part)
        except ClientLeft:
            return
        except TimeoutError:
            await _answer_json(send, 408, {"error": "request_timeout",
                                           "message": f"the request body stopped arriving for {self.body_timeout_s:g} s"})
            return
        loop = asyncio.get_running_loop()
        body = _Input(bytes(head), more, receive, loop, self.body_timeout_s)
        status, headers, chunks = await loop.run_in_executor(self.executor, self._call, _environ(scope, body))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": False})

    def _call(self, environ: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], list[bytes]]:
        """Run the app in a thread; its (small) answer is collected whole and sent from the loop."""
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            started[:] = [int(status.split(" ", 1)[0]),
                          [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]]
            return chunks.append

        chunks: list[bytes] = []
        result = self.app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return started[0], started[1], chunks

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return -1


async def _answer_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(headers or []),
    ]})
    await send({"type": "http.response.body", "body": data, "more_body": False})
