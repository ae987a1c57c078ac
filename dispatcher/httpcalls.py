"""``hub.http``: the call handler that relays an agent's HTTP requests to the broker (dispatcher/httpcall/).

Each try of a run gets one ``RunHttp`` at its first call, kept in the try's ``RunStats``: it holds the call
budget (``HUB_HTTP_MAX_CALLS``), the agent's secrets (its ``SECRET_*`` env vars, which the sandbox never has)
and its own allow-list (``HUB_HTTP_ALLOW``). Each call is one reply (the response masked of the secrets, or
``{"kind", "message"}``), one JobLog line (method, host and path, status, time, size; never a secret or a
query) and one metric; the counts go into the outbox row's ``result["http"]``.
"""

from __future__ import annotations

from dispatcher import protocol
from dispatcher.calls import CallScope, error_reply
from dispatcher.context import masked_env_values
from dispatcher.httpcall.broker import HttpBroker
from dispatcher.httpcall.run import RunHttp


class HttpCalls:
    def __init__(self, broker: HttpBroker) -> None:
        self.broker = broker  # one per process: its connection pools are shared by every run

    def run_of(self, scope: CallScope) -> RunHttp:
        """The try's RunHttp, made at its first call."""
        if scope.stats.http is None:
            env_vars = dict(scope.context.get("env_vars") or {})
            scope.stats.http = RunHttp(self.broker, env_vars=env_vars, secrets=scope.secrets, deadline=scope.deadline,
                                       also_mask=masked_env_values(env_vars))
        return scope.stats.http

    def __call__(self, call: protocol.Call, scope: CallScope) -> str:
        outcome = self.run_of(scope).call(call.params)
        if outcome.log_line is not None:
            scope.wb.log(outcome.log_level, scope.redact(outcome.log_line))
        if outcome.ok:
            return protocol.encode_reply(call.id, True, result=outcome.result)
        error = outcome.error or {}
        return error_reply(call.id, error.get("kind", "unavailable"), scope.redact(error.get("message", "")))
