"""Prometheus series of brokered ``hub.http`` calls, on the dispatcher's registry (core.metrics.REGISTRY)."""

from __future__ import annotations

from prometheus_client import Counter

from core.metrics import REGISTRY
from hubpy.hub._httperrors import HttpErrorKind

HTTP_CALLS = Counter("agenthub_http_calls", "hub.http calls by outcome (ok or the HttpError kind)", ["outcome"],
                     registry=REGISTRY)
HTTP_RESPONSE_BYTES = Counter("agenthub_http_response_bytes", "Body bytes of hub.http responses handed to agents",
                              registry=REGISTRY)

for _outcome in ("ok", *(k.value for k in HttpErrorKind)):
    HTTP_CALLS.labels(outcome=_outcome)  # every label present from the start: rate() needs the zero


def http_call(outcome: str, response_bytes: int = 0) -> None:
    HTTP_CALLS.labels(outcome=outcome).inc()
    if response_bytes:
        HTTP_RESPONSE_BYTES.inc(response_bytes)
