"""Flask app factory for the ingress."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg
import structlog
from flask import Flask, Response, g, jsonify, request
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import HTTPException

from core import metrics, migrate
from core.config import IngressConfig
from core.db import Pool, make_pool
from core.logging import get_logger
from core.sqlfiles import query
from ingress import openapi
from ingress.admission import Rules, SessionPolicy
from ingress.auth import bearer_problem
from ingress.body import RequestBody, drain_limit
from ingress.enqueue import enqueue
from ingress.errors import ApiError
from ingress.validation import Limits, parse_invoke

log = get_logger("ingress")

# Werkzeug's HTTP errors mapped to our stable error codes.
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _error(err: ApiError) -> tuple[Response, int]:
    resp = jsonify(err.body())
    resp.headers.update(err.headers)
    return resp, err.status


def create_app(config: IngressConfig | None = None, pool: Pool | None = None) -> Flask:
    cfg = config or IngressConfig.from_env()
    own_pool = pool is None
    if pool is None:
        pool = make_pool(
            cfg.database_url,
            min_size=cfg.pool_min,
            max_size=cfg.pool_max,
            timeout_s=cfg.pool_timeout_s,
            statement_timeout_ms=cfg.statement_timeout_ms,
            application_name="agent-hub-ingress",
        )
        # Do not wait: the process must start (and /readyz say why) even while Postgres is down.
        pool.open(wait=False)
    limits = Limits(max_prompt_chars=cfg.max_prompt_chars, max_id_chars=cfg.max_id_chars)
    rules = Rules(SessionPolicy(cfg.session_policy), rate_limit=cfg.rate_limit, rate_window_s=cfg.rate_window_s)
    max_drain = drain_limit(cfg.max_body_bytes)

    app = Flask("ingress")
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["pool"] = pool

    @app.before_request
    def _bind_request() -> None:
        rid = request.headers.get("X-Request-ID", "")
        if not (0 < len(rid) <= 128 and rid.isprintable()):
            rid = uuid.uuid4().hex
        g.request_id = rid
        g.started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)

    if cfg.ingress_token is not None:
        token = cfg.ingress_token

        @app.before_request
        def _authenticate() -> tuple[Response, int] | None:
            # Before the body is read: an unauthenticated caller costs no parsing and learns nothing.
            if not request.path.startswith("/api/"):
                return None  # /healthz, /readyz stay open for the platform's probes
            problem = bearer_problem(request.headers.get("Authorization"), token)
            if problem is None:
                return None
            log.warning("unauthorized", reason=problem, method=request.method, path=request.path)
            resp, st = _error(ApiError(401, "unauthorized", f"{problem}: send Authorization: Bearer <INGRESS_TOKEN>"))
            resp.headers["WWW-Authenticate"] = 'Bearer realm="ingress"'
            return resp, st

    @app.after_request
    def _log_request(resp: Response) -> Response:
        resp.headers["X-Request-ID"] = g.get("request_id", "")
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=resp.status_code,
            ms=round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2),
        )
        return resp

    @app.after_request
    def _finish_body(resp: Response) -> Response:
        # Runs before _log_request (Flask runs these last-registered first), so the logged time includes it.
        # Before any answer (a 413 above all) the unread rest of the body is read and dropped, else the
        # connection is reset under a client still sending and it never reads the answer (ingress/body.py).
        # Not for a 401: an unauthenticated caller gets nothing read.
        if resp.status_code != 401:
            body = RequestBody.of(request.environ)
            if not body.discard(max_drain):
                log.info("request_body_not_read", read_bytes=body.read_bytes, declared_bytes=body.declared,
                         limit_bytes=max_drain, status=resp.status_code)
        return resp

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> tuple[Response, int]:
        return _error(err)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> tuple[Response, int]:
        status = err.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = {
            404: "no such route",
            405: f"method {request.method} is not allowed here",
            413: f"the request body is larger than {cfg.max_body_bytes} bytes",
        }.get(status, err.description or "HTTP error")
        resp, st = _error(ApiError(status, code, message))
        if status == 405 and hasattr(err, "valid_methods") and err.valid_methods:
            resp.headers["Allow"] = ", ".join(err.valid_methods)
        return resp, st

    @app.errorhandler(psycopg.OperationalError)
    @app.errorhandler(PoolTimeout)
    def _db_down(err: Exception) -> tuple[Response, int]:
        log.warning("database_unavailable", error=type(err).__name__)
        resp, st = _error(ApiError(503, "database_unavailable", "the database is unavailable; nothing was queued, retry later"))
        resp.headers["Retry-After"] = "1"
        return resp, st

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> tuple[Response, int]:
        log.exception("unhandled_error")
        return _error(ApiError(500, "internal_error", "unexpected error; nothing was queued"))

    @app.post("/api/agents/<agent_id>/invoke")
    def invoke(agent_id: str) -> tuple[Response, int]:
        if request.mimetype != "application/json":
            raise ApiError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
        # 413 past MAX_BODY_BYTES, with or without a Content-Length; parsing ourselves keeps a JSON `null`
        # body (valid JSON, not an object) apart from unparsable bytes, and deep nesting from a 500.
        data = RequestBody.of(request.environ).read(cfg.max_body_bytes)
        try:
            body: Any = json.loads(data)
        except (ValueError, RecursionError):
            raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
        req = parse_invoke(agent_id, body, limits)
        structlog.contextvars.bind_contextvars(job_id=req.job_id, agent_id=req.agent_id)
        accepted = enqueue(pool, req, max_attempts=cfg.max_attempts, rules=rules)
        structlog.contextvars.bind_contextvars(outbox_id=accepted.invocation_id)
        log.info("invocation_queued" if accepted.created else "invocation_repeat", session_id=req.session_id)
        if accepted.interrupted:
            log.info("session_interrupted", session_id=req.session_id, cancelled_jobs=list(accepted.interrupted))
        return jsonify(accepted.body()), 202 if accepted.created else 200

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify({"status": "ok"}), 200

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        with pool.connection() as conn:
            row = conn.execute(query("ingress/readiness")).fetchone()
            try:
                todo = migrate.pending(conn) if row and row["outbox_ready"] else None
            except migrate.MigrationError as exc:
                return _error(ApiError(503, "not_ready", f"migrations do not match this release: {exc}"))
            conn.rollback()
        if not row or not row["outbox_ready"] or todo:
            missing = "pending migrations" if todo else "migrations not applied"
            return _error(ApiError(503, "not_ready", f"database reachable but {missing}; run the release step"))
        if not row["prisma_ready"]:
            return _error(ApiError(503, "not_ready", "the Prisma tables are missing from this database"))
        return jsonify({"status": "ready"}), 200

    metrics_registry = metrics.web_registry(pool)

    @app.get("/metrics")
    def metrics_text() -> Response:
        # Outbox gauges read from Postgres per scrape (core/metrics.py says why web has no counters).
        return Response(metrics.render(metrics_registry), content_type=metrics.CONTENT_TYPE)

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return Response(openapi.document_bytes(), content_type="application/json")

    if own_pool:
        import atexit

        atexit.register(pool.close)
    return app
