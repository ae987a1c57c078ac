"""The request body: read within ``MAX_BODY_BYTES``, and what an answer left unread discarded first.

A server that answers before the client has sent its whole body, then closes the connection, makes the
kernel reset it; clients that write the whole body before reading (Python's urllib, Node's http and so
axios) then report a broken pipe instead of the answer. So before answering, the ingress reads and drops
the rest of the body, up to ``drain_limit`` bytes in all. Past that it stops: gunicorn closes the
connection, and a client still sending may see a reset instead of the answer.
"""

from __future__ import annotations

from typing import IO, Any

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wsgi import get_content_length, get_input_stream

DRAIN_FLOOR_BYTES = 16 * 1024 * 1024
_STEP = 64 * 1024
_ENVIRON_KEY = "ingress.body"


def drain_limit(max_body_bytes: int) -> int:
    """How much of a body the ingress reads at most before answering: 16 MiB, or 4 × MAX_BODY_BYTES if larger."""
    return max(DRAIN_FLOOR_BYTES, 4 * max_body_bytes)


class RequestBody:
    """One request's body, ended by its Content-Length or by the server (chunked), counting what was read."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.declared = get_content_length(environ)
        # Without max_content_length: the limits are ours (read() and discard()); werkzeug's own would
        # stop a chunked body silently at the limit, and the truncated JSON would answer 400, not 413.
        self._stream: IO[bytes] = get_input_stream(environ, max_content_length=None)
        self.read_bytes = 0
        self.ended = self.declared == 0

    @classmethod
    def of(cls, environ: dict[str, Any]) -> RequestBody:
        """The request's body; the same object for the whole request, so discarding goes on where reading stopped."""
        body = environ.get(_ENVIRON_KEY)
        if not isinstance(body, RequestBody):
            body = environ[_ENVIRON_KEY] = cls(environ)
        return body

    def _chunk(self, size: int) -> bytes:
        try:
            data = self._stream.read(size)
        except (OSError, ValueError) as exc:  # the client went away mid-body (what werkzeug's own streams raise)
            raise ClientDisconnected() from exc
        if not data:
            self.ended = True
        self.read_bytes += len(data)
        return data

    def read(self, max_bytes: int) -> bytes:
        """The whole body; ``RequestEntityTooLarge`` (413) as soon as it is known to be longer than ``max_bytes``."""
        if self.declared is not None and self.declared > max_bytes:
            raise RequestEntityTooLarge()
        parts: list[bytes] = []
        size = 0
        while size <= max_bytes:
            data = self._chunk(min(_STEP, max_bytes + 1 - size))
            if not data:
                return b"".join(parts)
            parts.append(data)
            size += len(data)
        raise RequestEntityTooLarge()

    def discard(self, limit: int) -> bool:
        """Read and drop the rest of the body while at most ``limit`` bytes were read in all.

        True when the body was read to its end, so the client will read the answer.
        """
        if self.declared is not None and self.declared > limit:
            return False  # reading a part would not spare the client the reset: answer at once
        try:
            while not self.ended:
                if self.read_bytes >= limit:
                    return False
                self._chunk(min(_STEP, limit - self.read_bytes))
        except Exception:  # a client gone or a malformed chunk: the server closes the connection anyway
            return False
        return True
