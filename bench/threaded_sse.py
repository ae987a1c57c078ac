"""The thread-per-stream model, for comparison only (bench/streams.py --server-cmd; README, "Serving model"):
the same Flask app under gunicorn's gthread worker, each open stream a WSGI response generator holding one
thread (keep-alive comments only: no feed reads, so it flatters this model). Not used by the service.

    python -m bench.streams --server-cmd "python -m gunicorn -k gthread -w 1 --threads 1100 \\
        -b 127.0.0.1:{port} bench.threaded_sse:app"
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ingress.app import create_app

_STREAM = re.compile(r"^/api/(jobs|sessions)/[^/]+/events$")
_flask = create_app()


def _stream() -> Iterator[bytes]:
    yield b"retry: 2000\n\n"
    while True:
        time.sleep(15)
        yield b": keep-alive\n\n"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] == "GET" and _STREAM.match(environ.get("PATH_INFO", "")):
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
        return _stream()
    result: Iterable[bytes] = _flask(environ, start_response)
    return result
