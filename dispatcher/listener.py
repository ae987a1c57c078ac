"""The LISTEN side: wakes the claim loop when the ingress commits a new row.

A dedicated autocommit connection LISTENs on ``invocation_outbox``. It is checked
every ``check_s`` seconds by a NOTIFY to itself; a connection that errors or does
not hear its own ping (half-open TCP) is replaced, with backoff and jitter, and
the claim loop is woken to sweep for rows that became due meanwhile.
"""

from __future__ import annotations

import threading
import time
import uuid

import psycopg

from core.backoff import Backoff, Streak
from core.db import connect
from core.logging import get_logger
from core.vocabulary import OUTBOX_CHANNEL

CHANNEL = OUTBOX_CHANNEL
# Between reconnects: up to 0.2 s, doubling to 10 s, full jitter (core/backoff.py).
RECONNECT_BACKOFF = Backoff(base_s=0.2, max_s=10.0)
log = get_logger("dispatcher.listener")


class Listener:
    """A service (core/lifecycle.py): ``start()``, ``stop(timeout)``."""

    name = "listener"

    def __init__(self, url: str, wake: threading.Event, *, check_s: float = 15.0) -> None:
        self.url = url
        self.wake = wake
        self.stopping = threading.Event()
        self.check_s = check_s
        self.reconnects = 0
        self.notifications = 0
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop listening; returns once the connection is closed, or after ``timeout``."""
        self.stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        streak = Streak(RECONNECT_BACKOFF)
        while not self.stopping.is_set():
            try:
                self._listen()
                streak.succeeded()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self.reconnects += 1
                delay = streak.failed()
                log.warning("listen_connection_lost", error=type(exc).__name__, retry_in_s=round(delay, 2))
                self.wake.set()  # the poll sweeps whatever was missed
                self.stopping.wait(delay)

    def _listen(self) -> None:
        with connect(self.url, autocommit=True, application_name="agent-hub-dispatcher-listen") as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            log.info("listening", channel=CHANNEL)
            self.wake.set()  # rows may have arrived while we were not listening
            ping: str | None = None
            ping_sent = 0.0
            next_check = time.monotonic() + self.check_s
            while not self.stopping.is_set():
                for note in conn.notifies(timeout=0.5):
                    if ping is not None and note.payload == ping:
                        ping = None
                        continue
                    if note.payload.startswith("ping:"):
                        continue
                    self.notifications += 1
                    self.wake.set()
                now = time.monotonic()
                if ping is not None and now - ping_sent > 5.0:
                    raise TimeoutError("the listening connection did not hear its own ping")
                if ping is None and now >= next_check:
                    ping = f"ping:{uuid.uuid4().hex}"
                    ping_sent = now
                    next_check = now + self.check_s
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, ping))
