"""Where a Piston server is and what a run asks of it: URLs, runtime, timeouts, the init/request body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dispatcher.sandbox.port import SandboxRequest


def api_base(base_url: str) -> str:
    """`http://host:2000`, `http://host:2000/` and `http://host:2000/api/v2` all mean the same server."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"Piston URL must be http:// or https://host[:port], got {base_url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/api/v2"):
        path = path[: -len("/api/v2")]
    return urlunsplit((parts.scheme, parts.netloc, path + "/api/v2", "", ""))


@dataclass(frozen=True)
class Endpoint:
    api: str  # http(s)://host:port/api/v2
    language: str = "python"
    version: str = "*"
    connect_timeout_s: float = 5.0
    # Piston queues jobs with no timeout: every wait is bounded by run_timeout + this (and, on the
    # WebSocket, this much queue allowance before the run starts).
    execute_margin_s: float = 30.0
    max_output_chars: int = 1_000_000  # ours, on the WebSocket (Piston caps nothing there): stdout + stderr
    stderr_tail_chars: int = 4000

    @property
    def ws_url(self) -> str:
        return "ws" + self.api[len("http") :] + "/connect"  # http→ws, https→wss

    def body(self, request: SandboxRequest) -> dict[str, Any]:
        """The fields /execute and the WebSocket's init share."""
        limits = request.limits
        body: dict[str, Any] = {
            "language": self.language,
            "version": self.version,
            "files": list(request.files),
            "args": list(request.args),
            "run_timeout": limits.run_timeout_ms,
        }
        # Optional limits only when set: older servers refuse nothing, but unset means "server default".
        if limits.run_cpu_time_ms is not None:
            body["run_cpu_time"] = limits.run_cpu_time_ms
        if limits.run_memory_limit is not None:
            body["run_memory_limit"] = limits.run_memory_limit
        return body
