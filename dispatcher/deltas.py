"""A streaming message's chunks on their way to the feed: ``delta`` events, batched per ``window_s``.

The agent may send a chunk per token; a feed row (and a commit, and a wake-up of every stream of the
session) per token would be wasteful. A chunk that comes after a quiet spell (no flush in the last
``window_s``) is written at once, so a lone chunk is not held back; the chunks that follow within the
window are joined and written together when it ends (a timer), as one ``delta`` with the next index.
Writes go to ``write(index, text)``, in index order (under the batcher's lock): WriteBack.deltas, which does
not wait for the commit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DELTA_WINDOW_S = 0.025  # deltas are batched per this much time (the issue allows "a few tens of milliseconds")


class DeltaBatcher:
    def __init__(self, write: Callable[[int, str], None], *, window_s: float = DELTA_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._write = write
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._timer: threading.Timer | None = None
        self._last_flush = float("-inf")
        self._closed = False
        self.next_index = 0  # the index the next delta written gets (0, 1, 2, ...)

    def add(self, text: str) -> None:
        """One chunk of the message (empty chunks are left out)."""
        if not text:
            return
        with self._lock:
            if self._closed:
                return
            self._pending.append(text)
            if self._timer is not None:
                return  # a flush is already scheduled: this chunk goes with it
            wait = self._last_flush + self.window_s - self._clock()
            if wait <= 0:
                self._flush_locked()
                return
            self._timer = threading.Timer(wait, self.flush)
            self._timer.daemon = True
            self._timer.start()

    def flush(self) -> None:
        """Write what is pending now (the timer's callback; also before the message itself is written)."""
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        """Flush, and take no more chunks (a timer still running finds nothing to write)."""
        with self._lock:
            self._flush_locked()
            self._closed = True

    def _flush_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending = []
        index = self.next_index
        self.next_index += 1
        self._last_flush = self._clock()
        self._write(index, text)
