"""Piston as a sandbox (the port's adapter): a run goes to ws.py or execute.py by its transport.

Every quirk listed in docs/piston.md is handled in this package, so callers see the port's one result
shape and its three kinds of failure. File contents and stdin are never logged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import structlog

from dispatcher.sandbox.piston.endpoint import Endpoint, api_base
from dispatcher.sandbox.piston.execute import run_execute
from dispatcher.sandbox.piston.http import PistonHttp, json_or_none, raise_for_status
from dispatcher.sandbox.piston.limits import FIELDS, ServerLimits
from dispatcher.sandbox.piston.ws import run_ws
from dispatcher.sandbox.port import RunResult, SandboxError, SandboxRefused, SandboxRequest, Transport

log = structlog.get_logger("piston")


def server_name(base_url: str) -> str:
    """How logs, metrics and verify name a server: its URL without credentials, e.g. ``http://a:2000``."""
    parts = urlsplit(base_url.strip())
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path.rstrip('/')}"


class PistonClient:
    """One Piston server; thread-safe. Takes ``ws`` and ``execute`` runs (``auto``: sandbox/auto.py)."""

    def __init__(
        self,
        base_url: str,
        *,
        language: str = "python",
        version: str = "*",
        connect_timeout_s: float = 5.0,
        execute_margin_s: float = 30.0,
        max_output_chars: int = 1_000_000,
        stderr_tail_chars: int = 4000,
        pool_size: int = 10,
    ) -> None:
        self.endpoint = Endpoint(api=api_base(base_url), language=language, version=version,
                                 connect_timeout_s=connect_timeout_s, execute_margin_s=execute_margin_s,
                                 max_output_chars=max_output_chars, stderr_tail_chars=stderr_tail_chars)
        self.http = PistonHttp(self.endpoint.api, pool_size=pool_size)
        self.name = server_name(base_url)
        self.limits = ServerLimits(self.name)  # the server's own limits, learned from its refusals

    def runtimes(self) -> list[dict[str, Any]]:
        """GET /api/v2/runtimes. (Never /api/v2/packages: it crashes an offline Piston.)"""
        timeout = self.endpoint.connect_timeout_s
        resp = self.http.call("GET", "/runtimes", timeout=(timeout, timeout * 2), body=None)
        assert resp is not None  # only a stop check can make call() return None
        if resp.status_code != 200:
            raise_for_status(resp)
        data = json_or_none(resp)
        if not isinstance(data, list):
            raise SandboxError("Piston answered /runtimes with something that is not a list")
        return data

    def has_python(self) -> bool:
        return any(rt.get("language") == "python" or "python" in (rt.get("aliases") or []) for rt in self.runtimes())

    def run(self, request: SandboxRequest) -> RunResult:
        """Run ``request``, at this server's limits where it asks more (each refusal learned, then sent again)."""
        for _ in range(len(FIELDS) + 1):
            capped = self.limits.cap(request.limits)
            try:
                result = self._run(replace(request, limits=capped) if capped != request.limits else request)
            except SandboxRefused as exc:
                if not self.limits.learn(exc.message, capped):
                    raise
                continue
            return replace(result, limits=capped if capped != request.limits else None, server=self.name)
        raise SandboxRefused("Piston kept refusing the run's limits")  # pragma: no cover - one field learned per try

    def _run(self, request: SandboxRequest) -> RunResult:
        limits = request.limits
        log.info(
            "piston_run_start",
            server=self.name,
            transport=str(request.transport),
            files=len(request.files),
            code_chars=sum(len(str(f.get("content", ""))) for f in request.files),
            stdin_chars=len(request.stdin),
            run_timeout_ms=limits.run_timeout_ms,
            run_cpu_time_ms=limits.run_cpu_time_ms,
            run_memory_limit=limits.run_memory_limit,
        )
        match Transport(request.transport):
            case Transport.WS:
                result = run_ws(self.endpoint, request)
            case Transport.EXECUTE:
                result = run_execute(self.endpoint, self.http, request)
            case Transport.AUTO:
                raise ValueError("PistonClient runs ws or execute; wrap it in AutoTransport for auto")
        log.info(
            "piston_run_end",
            server=self.name,
            transport=str(result.transport),
            status=str(result.status),
            code=result.code,
            signal=result.signal,
            wall_ms=round(result.wall_ms, 1),
            started=result.started,
        )
        return result

    def close(self) -> None:
        self.http.close()
