"""Prometheus metrics of the service (names and meanings: docs/operations.md, "Observability").

Two kinds:
- counters and a histogram kept in this process (dispatcher only: claims, runs by outcome, run
  durations, Piston errors and retries, LLM calls and tokens), incremented through the small
  functions below so call sites stay one line;
- gauges read from Postgres at scrape time (``OutboxCollector``: rows by status, age of the oldest
  pending row). Being per-scrape, they are right whichever web worker answers, which is why web
  serves only these: per-request counters in a multi-worker gunicorn would be per worker.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import PoolTimeout

from core.db import Pool
from core.sqlfiles import query
from core.vocabulary import OutboxStatus, RunLabel

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The dispatcher's own registry (not prometheus_client's global one, so tests and the web app do
# not see dispatcher series they never update).
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

CLAIMS = Counter("agenthub_dispatcher_claims", "Outbox rows claimed by this dispatcher", registry=REGISTRY)
RUNS = Counter("agenthub_dispatcher_runs", "Invocation attempts by final label", ["outcome"], registry=REGISTRY)
RUN_SECONDS = Histogram(
    "agenthub_dispatcher_run_duration_seconds", "Wall time of one attempt, claim to outcome written", ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600), registry=REGISTRY,
)
PISTON_ERRORS = Counter("agenthub_piston_errors", "Piston faults by kind (refused, transient, error)", ["kind"],
                        registry=REGISTRY)
PISTON_RETRIES = Counter("agenthub_piston_retries", "In-process retries of a transient Piston fault", registry=REGISTRY)
DB_WRITE_RETRIES = Counter("agenthub_db_write_retries", "Write-back retries while Postgres was unreachable",
                           registry=REGISTRY)
# The group-commit writers (dispatcher/groupcommit.py): statements / commits is the batching achieved.
WRITE_COMMITS = Counter("agenthub_dispatcher_write_commits", "Transactions committed by the group-commit writers",
                        registry=REGISTRY)
WRITE_STATEMENTS = Counter("agenthub_dispatcher_write_statements", "Statements committed by the group-commit writers",
                           registry=REGISTRY)
WRITE_FAILURES = Counter("agenthub_dispatcher_write_failures",
                         "Writes that failed in the group-commit writers, by whether a run was waiting for them",
                         ["awaited"], registry=REGISTRY)
# Lease fencing (docs/runbook.md, "Leases and fencing"): a run's write refused because the run no longer held
# its row; runs this dispatcher stopped itself because it could not renew their leases in time.
FENCED_WRITES = Counter("agenthub_dispatcher_fenced_runs", "Runs whose write was refused by the lease fence",
                        registry=REGISTRY)
SELF_FENCED = Counter("agenthub_dispatcher_self_fenced_runs",
                      "Runs stopped by this dispatcher before their lease could expire unrenewed", registry=REGISTRY)
WRITES_ABANDONED = Counter("agenthub_dispatcher_writes_abandoned",
                           "Writes of a stopped run no longer waited for (Postgres unreachable): fenced, they may land later",
                           registry=REGISTRY)
OUTCOMES_DROPPED = Counter("agenthub_dispatcher_outcomes_dropped",
                           "Finished runs whose outcome was not written: the row had been claimed by another dispatcher",
                           registry=REGISTRY)
LLM_CALLS = Counter("agenthub_llm_calls", "hub.call_llm calls by model and outcome (ok or the LLMError kind)",
                    ["model", "outcome"], registry=REGISTRY)
LLM_TOKENS = Counter("agenthub_llm_tokens", "Gemini tokens used by hub.call_llm, by model and kind (prompt, output)",
                     ["model", "kind"], registry=REGISTRY)
# A pool of Piston servers (PISTON_URL with several servers; dispatcher/sandbox/pool.py), by server URL.
PISTON_SERVER_RUNS = Gauge("agenthub_piston_server_runs_in_flight", "Runs this dispatcher has on a pool's Piston server",
                           ["server"], registry=REGISTRY)
PISTON_SERVER_UP = Gauge("agenthub_piston_server_up",
                         "1 while a pool's Piston server takes runs, 0 while it cools down after a transient fault",
                         ["server"], registry=REGISTRY)
PISTON_SERVER_FAILURES = Counter("agenthub_piston_server_failures",
                                 "Transient faults of a pool's Piston server (each starts or lengthens a cool-down)",
                                 ["server"], registry=REGISTRY)

for _outcome in RunLabel:
    RUNS.labels(outcome=_outcome.value)  # every label present from the start: rate() needs the zero
for _kind in ("refused", "transient", "error"):
    PISTON_ERRORS.labels(kind=_kind)
for _awaited in ("true", "false"):
    WRITE_FAILURES.labels(awaited=_awaited)


def run_finished(outcome: str, seconds: float) -> None:
    """One attempt ended with ``outcome`` (apply_outcome's label) after ``seconds``."""
    RUNS.labels(outcome=outcome).inc()
    RUN_SECONDS.labels(outcome=outcome).observe(seconds)


def piston_error(kind: str) -> None:
    """A Piston fault that ended an attempt: ``refused``, ``transient`` (after retries) or ``error``."""
    PISTON_ERRORS.labels(kind=kind).inc()


def llm_call(model: str, outcome: str, *, prompt_tokens: int = 0, output_tokens: int = 0) -> None:
    """One hub.call_llm: ``outcome`` is ``ok`` or the LLMError kind; tokens as Gemini reported them."""
    LLM_CALLS.labels(model=model, outcome=outcome).inc()
    if prompt_tokens:
        LLM_TOKENS.labels(model=model, kind="prompt").inc(prompt_tokens)
    if output_tokens:
        LLM_TOKENS.labels(model=model, kind="output").inc(output_tokens)


class OutboxCollector(Collector):
    """Outbox gauges queried at scrape time; ``agenthub_database_up`` 0 when Postgres cannot answer."""

    def __init__(self, pool: Pool, timeout_s: float = 2.0) -> None:
        self.pool = pool
        self.timeout_s = timeout_s

    def describe(self) -> list[Metric]:
        return []  # not described up front: the registry must not query the database at registration

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("agenthub_database_up", "1 when the scrape could read the outbox from Postgres")
        try:
            with self.pool.connection(timeout=self.timeout_s) as conn:
                rows = conn.execute(query("metrics/outbox")).fetchall()
        except (psycopg.Error, PoolTimeout) as exc:
            if isinstance(exc, psycopg.OperationalError):
                with contextlib.suppress(Exception):  # drop the pool's dead connections before the next scrape
                    self.pool.check()
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        by_status = GaugeMetricFamily("agenthub_outbox_rows", "Outbox rows by status", labels=["status"])
        oldest = GaugeMetricFamily("agenthub_outbox_oldest_pending_age_seconds",
                                   "Age of the oldest pending outbox row (0 when none)")
        counts: dict[str, Any] = {row["status"]: row for row in rows}
        for status in OutboxStatus:
            by_status.add_metric([status.value], float(counts[status]["n"]) if status in counts else 0.0)
        pending = counts.get(OutboxStatus.PENDING)
        oldest.add_metric([], float(pending["oldest_age_s"] or 0.0) if pending else 0.0)
        yield by_status
        yield oldest


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(registry)


def web_registry(pool: Pool) -> CollectorRegistry:
    """What web's /metrics serves: the DB-derived gauges only (see the module docstring)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OutboxCollector(pool))
    return registry


def serve_dispatcher_metrics(pool: Pool, port: int, host: str = "0.0.0.0") -> Any:
    """Start the dispatcher's /metrics HTTP server in a daemon thread; returns the server (``.shutdown()``)."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(REGISTRY))
    registry.register(OutboxCollector(pool))
    server, thread = start_http_server(port, addr=host, registry=registry)
    thread.name = "metrics"
    return server


class MetricsServer:
    """The dispatcher's /metrics HTTP server as a service (core/lifecycle.py)."""

    name = "metrics"

    def __init__(self, pool: Pool, port: int, host: str = "0.0.0.0") -> None:
        self.pool, self.port, self.host = pool, port, host
        self._server: Any = None

    def start(self) -> None:
        self._server = serve_dispatcher_metrics(self.pool, self.port, self.host)

    def stop(self, timeout: float) -> None:
        """Stops serving (the server's loop checks every 0.5 s) and closes the socket."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


class _Merged(Collector):
    """The process registry's series, inside the dispatcher's scrape registry."""

    def __init__(self, inner: CollectorRegistry) -> None:
        self.inner = inner
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            yield from self.inner.collect()
