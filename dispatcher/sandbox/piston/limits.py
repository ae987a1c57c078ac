"""A Piston server's own limits, learned from its refusals: a run asking more than the server allows runs at
the server's limit instead of failing.

Piston refuses a limit above its configuration (``PISTON_RUN_TIMEOUT``, ``PISTON_LIMIT_OVERRIDES``…) before
anything runs, with 400 / a WebSocket error ``run_timeout cannot exceed the configured limit of 3000``
(docs/piston.md). ``ServerLimits`` remembers each such limit of one server (logged once, as a warning)
and lowers every later request to it, so only the first run that asks too much is refused, and that one is
sent again at once, lowered.
"""

from __future__ import annotations

import re
import threading
from dataclasses import replace

import structlog

from dispatcher.sandbox.port import RunLimits

log = structlog.get_logger("piston")

REFUSAL = re.compile(r"^(run_timeout|run_memory_limit|run_cpu_time) cannot exceed the configured limit of (-?\d+)$")
FIELDS = {"run_timeout": "run_timeout_ms", "run_memory_limit": "run_memory_limit", "run_cpu_time": "run_cpu_time_ms"}


def refused_limit(message: str) -> tuple[str, int] | None:
    """(Piston's field name, its configured limit) when ``message`` is Piston's refusal of a limit."""
    match = REFUSAL.match(message.strip())
    if match is None:
        return None
    return match.group(1), int(match.group(2))


class ServerLimits:
    """What one Piston server is known to allow; thread-safe."""

    def __init__(self, server: str, *, announce: bool = True) -> None:
        self.server = server
        self.announce = announce  # log each learned limit (not when `verify` probes for them on purpose)
        self._lock = threading.Lock()
        self.known: dict[str, int] = {}  # Piston's field name → its configured limit

    def cap(self, limits: RunLimits) -> RunLimits:
        """``limits`` lowered to what the server is known to allow."""
        with self._lock:
            known = dict(self.known)
        changes: dict[str, int] = {}
        for field, attr in FIELDS.items():
            most = known.get(field)
            asked = getattr(limits, attr)
            # 0 asks for "no limit", which a server with a limit refuses as well: it is lowered too.
            if most is not None and most > 0 and asked is not None and (asked > most or asked == 0):
                changes[attr] = most
        return replace(limits, **changes) if changes else limits

    def learn(self, message: str, asked: RunLimits) -> bool:
        """Remember the limit a refusal names; True when the request can be sent again, lowered."""
        refused = refused_limit(message)
        if refused is None:
            return False
        field, most = refused
        value = getattr(asked, FIELDS[field])
        if most <= 0 or value is None or not (value > most or value == 0):
            return False  # nothing we asked can be lowered to fit: the refusal stands
        with self._lock:
            first = self.known.get(field) != most
            self.known[field] = most
        if first and self.announce:
            log.warning("piston_limit_learned", server=self.server, field=field, limit=most, asked=value,
                        note="runs asking more go at this server's limit; raise it on the server to give them more")
        return True
