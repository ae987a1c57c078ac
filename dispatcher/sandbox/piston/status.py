"""A run's status from what Piston reports: /execute's ``status`` (servers from 2024-09 on), else derived.

Piston's WebSocket reports no status at all, and older servers' /execute none either, so TO / SG / RE
are derived from the exit code, signal and wall time, worded as Piston's isolate words them.
"""

from __future__ import annotations

import signal as signals
from typing import Any

from dispatcher.sandbox.port import RunLimits, RunStatus

TO_FRACTION = 0.9  # a SIGKILL after this share of the time limit is a time-out, earlier it is a plain signal
REPORTED = ("RE", "SG", "TO", "OL", "EL", "XX")
STOPPED_MESSAGE = "Stopped by the caller; the run goes on server-side until its limits"
STOPPED_ENDED_MESSAGE = "Stopped by the caller; the program ended on the hub's cancel line"


def derive_status(code: int | None, signal: str | None, wall_ms: float | None, limits: RunLimits) -> tuple[RunStatus, str | None]:
    """Status for servers that report none (the WebSocket, /execute before 2024-09).

    A SIGKILL with no exit code is a time-out only when it came near the smallest time limit we asked for (the
    server's own run_cpu_time is not known here, so a CPU kill under a longer run_timeout reads as SG).
    """
    if signal:
        if signal == "SIGKILL" and code is None and wall_ms is not None:
            time_limits = [ms for ms in (limits.run_timeout_ms, limits.run_cpu_time_ms) if ms and ms > 0]
            if time_limits and wall_ms >= TO_FRACTION * min(time_limits):
                return RunStatus.TO, "Time limit exceeded"
        number = getattr(signals.Signals, signal, None)
        return RunStatus.SG, (f"Caught fatal signal {int(number)}" if number else f"Killed by signal {signal}")
    if code:
        return RunStatus.RE, f"Exited with error status {code}"
    return RunStatus.OK, None


def execute_status(run: dict[str, Any], wall_ms: float, limits: RunLimits) -> tuple[RunStatus, str | None]:
    """The status of /execute's ``run`` object: reported by servers from 2024-09 on, else derived."""
    if "status" not in run:  # older servers: only stdout, stderr, output, code, signal
        return derive_status(run.get("code"), run.get("signal"), wall_ms, limits)
    raw, message = run.get("status"), run.get("message")
    if raw is None:
        return RunStatus.OK, message
    if raw in REPORTED:
        return RunStatus(raw), message
    return RunStatus.XX, message or f"unknown Piston status {raw!r}"


def tail(text: str, limit: int) -> str:
    return text[-limit:] if limit > 0 else ""
