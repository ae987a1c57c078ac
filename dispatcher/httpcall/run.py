"""One run's ``hub.http`` calls: the call budget, secrets in and masked out, the reply, the JobLog line,
the run's stats. This is what the relay (dispatcher/calls.py) holds, one per run."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

import dispatcher.httpcall.metrics as metrics
from dispatcher.httpcall.broker import HttpBroker, HttpResponse
from dispatcher.httpcall.request import build_request
from hubpy.hub._hosts import HostPatternError, HostPatterns
from hubpy.hub._httperrors import HttpCallError, HttpErrorKind, bad_request, forbidden
from hubpy.hub._httphops import OFF
from hubpy.hub._httprecord import (
    AGENT_ALLOW_VAR,
    call_target,
    failed_line,
    limit_line,
    limit_message,
    ok_line,
    reply,
)
from hubpy.hub._secrets import SecretBox

log = structlog.get_logger("dispatcher.http")

MAX_PER_CALL = 200  # entries of stats["per_call"] kept


@dataclass(frozen=True)
class HttpOutcome:
    """What the relay does with one call: reply (``ok`` with ``result``, or ``error``) and log ``log_line``."""

    ok: bool
    result: dict[str, Any] | None  # for the sandbox: status, reason, headers, text, url, elapsed_ms, size, redirects
    error: dict[str, str] | None   # {"kind", "message"}
    log_level: str                 # "info" or "warning"
    log_line: str | None           # the JobLog line; None when there is nothing more to say (calls over the limit)
    kind: str | None = None        # None when ok


def empty_http_stats() -> dict[str, Any]:
    return {"calls": 0, "failed": 0, "over_limit": 0, "bytes": 0, "latency_ms": 0, "kinds": {}, "per_call": []}


class RunHttp:
    """``hub.http`` for one run. Not thread-safe: the relay answers a run's calls one at a time."""

    def __init__(self, broker: HttpBroker, *, env_vars: Mapping[str, str], secrets: Mapping[str, str], deadline: float,
                 also_mask: Iterable[str] = ()) -> None:
        """``env_vars``: the agent's visible env vars (for HUB_HTTP_ALLOW); ``secrets``: its SECRET_* ones;
        ``deadline``: time.monotonic() at which the run's time is up; ``also_mask``: more values to keep out of
        log lines and error messages (the visible env values, as every JobLog line does); a response is masked
        of the secrets only."""
        self.broker = broker
        self.settings = broker.settings
        self.deadline = deadline
        self.box = SecretBox(secrets, also_mask=also_mask)
        self.calls = 0
        self.stats = empty_http_stats()
        self.agent_allow: HostPatterns | None = None
        self.agent_allow_error: str | None = None
        try:
            self.agent_allow = HostPatterns.parse(env_vars.get(AGENT_ALLOW_VAR), AGENT_ALLOW_VAR)
        except HostPatternError as exc:
            self.agent_allow_error = str(exc)

    def call(self, params: Mapping[str, Any]) -> HttpOutcome:
        """Perform one call; never raises (a failure is an error outcome)."""
        self.calls += 1
        n = self.calls
        where = call_target(dict(params))
        if n > self.settings.http_max_calls:
            self.stats["over_limit"] += 1
            metrics.http_call(HttpErrorKind.LIMIT.value)
            first = n == self.settings.http_max_calls + 1
            message = limit_message(self.settings.http_max_calls)
            return HttpOutcome(False, None, {"kind": HttpErrorKind.LIMIT.value, "message": message}, "warning",
                               self._masked(limit_line(self.settings.http_max_calls)) if first else None,
                               HttpErrorKind.LIMIT.value)
        started = time.monotonic()
        try:
            response = self._perform(params)
        except HttpCallError as exc:
            return self._failed(n, where, exc.kind, exc.message, started)
        except Exception as exc:  # a bug: the agent gets "unavailable", the log gets no URL and no secret
            log.error("http_call_bug", error_type=type(exc).__name__, error=self.box.head(str(exc), 300))
            return self._failed(n, where, HttpErrorKind.UNAVAILABLE,
                                f"the hub failed to make the call ({type(exc).__name__})", started)
        return self._succeeded(n, where, response)

    def _perform(self, params: Mapping[str, Any]) -> HttpResponse:
        if not self.settings.http_enabled:
            raise forbidden(OFF)
        request = build_request(params, self.box, max_request_bytes=self.settings.http_max_request_bytes,
                                max_timeout_s=self.settings.http_timeout_s)
        if self.agent_allow_error is not None:
            raise bad_request(self.agent_allow_error)
        return self.broker.perform(request, agent_allow=self.agent_allow, deadline=self.deadline)

    def _masked(self, text: str) -> str:
        return self.box.mask_for_log(text)

    def reply(self, response: HttpResponse) -> dict[str, Any]:
        """The result the sandbox gets: every secret masked (an API that echoes the request must not hand it back)."""
        return reply(self.box, status=response.status, reason=response.reason, headers=response.headers,
                     text=response.text, url=response.url, elapsed_ms=response.elapsed_ms, size=response.size,
                     redirects=response.redirects)

    def _succeeded(self, n: int, where: str, response: HttpResponse) -> HttpOutcome:
        s = self.stats
        s["calls"] += 1
        s["bytes"] += response.size
        s["latency_ms"] += response.elapsed_ms
        self._per_call(where, response.status, None, response.elapsed_ms, response.size, response.redirects)
        metrics.http_call("ok", response.size)
        line = ok_line(n, where, status=response.status, elapsed_ms=response.elapsed_ms, size=response.size,
                       redirects=response.redirects, final_url=response.url)
        log.info("http_call", ok=True, status=response.status, elapsed_ms=response.elapsed_ms, size=response.size,
                 redirects=response.redirects)
        return HttpOutcome(True, self.reply(response), None, "info", self._masked(line))

    def _failed(self, n: int, where: str, kind: HttpErrorKind, message: str, started: float) -> HttpOutcome:
        elapsed = int((time.monotonic() - started) * 1000)
        message = self.box.clip(message, 1000)
        s = self.stats
        s["calls"] += 1
        s["failed"] += 1
        s["latency_ms"] += elapsed
        s["kinds"][kind.value] = s["kinds"].get(kind.value, 0) + 1
        self._per_call(where, None, kind.value, elapsed, 0, 0)
        metrics.http_call(kind.value)
        line = failed_line(n, where, kind=kind.value, message=message, elapsed_ms=elapsed, box=self.box)
        log.info("http_call", ok=False, kind=kind.value, elapsed_ms=elapsed)
        return HttpOutcome(False, None, {"kind": kind.value, "message": message}, "warning", self._masked(line),
                           kind.value)

    def _per_call(self, where: str, status: int | None, kind: str | None, elapsed_ms: int, size: int,
                  redirects: int) -> None:
        if len(self.stats["per_call"]) < MAX_PER_CALL:
            self.stats["per_call"].append({"call": self._masked(where), "status": status, "kind": kind,
                                           "elapsed_ms": elapsed_ms, "bytes": size, "redirects": redirects})
