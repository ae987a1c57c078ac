"""Brokered HTTP for agents (``hub.http``): the sandbox has no network, the dispatcher makes the call.

- ``request``: the call's arguments checked, ``{{SECRET_…}}`` substituted (``dispatcher.secrets``);
- ``hosts`` / ``addresses``: the two allow-lists and the address rules;
- ``transport``: the pooled client that connects to the checked address (pinning) under one deadline;
- ``broker``: one call, hop by hop (``HttpBroker``, ``HttpSettings``, ``broker_for``);
- ``run``: one run's calls (``RunHttp``): budget, masking, reply, JobLog line, stats.

See docs/security.md, "Brokered HTTP".
"""

from dispatcher.httpcall.broker import HttpBroker, HttpResponse, HttpSettings, broker_for
from dispatcher.httpcall.errors import HttpCallError, HttpErrorKind
from dispatcher.httpcall.hosts import HostPatternError, HostPatterns
from dispatcher.httpcall.run import AGENT_ALLOW_VAR, HttpOutcome, RunHttp, empty_http_stats

__all__ = [
    "AGENT_ALLOW_VAR",
    "HostPatternError",
    "HostPatterns",
    "HttpBroker",
    "HttpCallError",
    "HttpErrorKind",
    "HttpOutcome",
    "HttpResponse",
    "HttpSettings",
    "RunHttp",
    "broker_for",
    "empty_http_stats",
]
