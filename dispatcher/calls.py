"""Answering the sandbox's ``call`` lines (hub.call_llm, hub.call_agent, hub.http) with reply lines for its stdin.

The router sends each ``protocol.Call`` to the handler of its method: call_llm to
``dispatcher/llmcalls.py``, call_agent to ``dispatcher/children.py``, http to ``dispatcher/httpcalls.py``, wired in by the worker
(``dispatcher/worker.py``). Calls are answered in the run's own thread, in order: the agent is blocked
on its call anyway, and a child invocation must run while its caller's lease is still being renewed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from dispatcher import protocol
from dispatcher.claim import Claimed
from dispatcher.control import RunControl
from dispatcher.protocol import CallMethod
from dispatcher.runstats import RunStats
from dispatcher.writeback import WriteBack
from hubpy.hub._redact import Redactor

log = structlog.get_logger("dispatcher.calls")


@dataclass(frozen=True)
class CallScope:
    """What a handler may use of the run that made the call."""

    row: Claimed
    context: Mapping[str, Any]  # the run's hub context (dispatcher/context.py)
    wb: WriteBack
    control: RunControl
    deadline: float  # time.monotonic() at which the run's time limit is reached
    stats: RunStats
    redact: Redactor  # masks the agent's secrets: an error text may quote the agent's own data
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)  # SECRET_* env vars, for hub.http only
    max_llm_calls: int | None = None  # this run's call_llm cap (the agent's HUB_MAX_LLM_CALLS); None: the service's


class CallHandler(Protocol):
    def __call__(self, call: protocol.Call, scope: CallScope) -> str:
        """The reply line for ``call``; never raises for a failed call (the agent gets an error reply)."""
        ...


def error_reply(call_id: int, kind: str, message: str) -> str:
    return protocol.encode_reply(call_id, False, error={"kind": kind, "message": message})


class CallRouter:
    def __init__(self) -> None:
        self._handlers: dict[CallMethod, CallHandler] = {}

    def route(self, method: CallMethod, handler: CallHandler) -> None:
        self._handlers[method] = handler

    def answer(self, call: protocol.Call, scope: CallScope, partial: Callable[[str], None] | None = None) -> str:
        """The reply line for ``call``; a handler's crash becomes an ``internal`` error reply. ``partial``: where a
        streaming call's (``protocol.is_streaming``) chunk lines go before that final reply, for a handler that
        streams (``answer_streaming``)."""
        handler = self._handlers.get(call.method)
        if handler is None:
            return error_reply(call.id, "invalid_request", f"unknown method {str(call.method)[:40]!r}")
        try:
            streaming = getattr(handler, "answer_streaming", None)
            if partial is not None and streaming is not None:
                reply: str = streaming(call, scope, partial)
                return reply
            return handler(call, scope)
        except Exception as exc:
            log.exception("call_failed", method=str(call.method))
            return error_reply(call.id, "internal", f"the hub failed to answer {call.method}: {type(exc).__name__}")
