"""The web process's application: native async SSE streams beside the Flask app (README: "Serving model").

``GET /api/jobs/<jobId>/events`` and ``GET /api/sessions/<sessionId>/events`` are served on the event
loop (ingress/sse.py), woken by one LISTEN connection per process (ingress/feedhub.py); every other
request goes to the Flask app (the invoke endpoint, probes, metrics, the OpenAPI document) through
ingress/wsgi_bridge.py, unchanged. Errors of the stream routes have the API's one JSON shape.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from typing import Any
from urllib.parse import unquote

import psycopg
from flask import Flask
from psycopg_pool import PoolTimeout

from core.config import IngressConfig, StreamConfig, parse_int
from core.db import Pool
from core.logging import configure, get_logger
from ingress.app import create_app
from ingress.auth import bearer_problem
from ingress.errors import ApiError
from ingress.feedhub import FeedHub, make_async_pool
from ingress.sse import Receive, Scope, Send, open_stream, target_of
from ingress.validation import Limits
from ingress.wsgi_bridge import WsgiBridge, _answer_json

log = get_logger("ingress")

# Matched on the raw path, so an id with an encoded "/" stays one segment.
_STREAM_ROUTE = re.compile(rb"^/api/(jobs|sessions)/([^/]+)/events$")


class IngressApp:
    """The ASGI app: lifespan (the hub, the streams' pool), the stream routes, and Flask for the rest."""

    def __init__(self, cfg: IngressConfig, streams: StreamConfig, flask_app: Flask, *, threads: int) -> None:
        self.cfg = cfg
        self.streams_cfg = streams
        self.flask = flask_app
        self.limits = Limits(max_prompt_chars=cfg.max_prompt_chars, max_id_chars=cfg.max_id_chars)
        self.bridge = WsgiBridge(flask_app, threads=threads,
                                 prebuffer_bytes=cfg.max_body_bytes + 1, body_timeout_s=streams.body_timeout_s)
        self.pool = make_async_pool(cfg.database_url, max_size=streams.pool_max, timeout_s=cfg.pool_timeout_s,
                                    statement_timeout_ms=cfg.statement_timeout_ms)
        self.hub = FeedHub(cfg.database_url, ping_s=streams.keepalive_s)
        self.started = False
        self.drain_on_sigterm = False  # set for the served process (serve_app), not for apps in tests

    async def startup(self) -> None:
        if not self.started:
            self.started = True
            await self.pool.open(wait=False)  # start even while Postgres is down; streams then answer 503
            self.hub.start()
            _quiet_cancelled_connections(asyncio.get_running_loop())
            if self.drain_on_sigterm:
                _drain_on_sigterm(self)

    def drain(self) -> None:
        """SIGTERM: end every open stream now with a last event (``shutting_down``), so the server's graceful
        stop finds none left to cut, and clients resume at once elsewhere. Safe to call from a signal handler
        through ``loop.call_soon_threadsafe``."""
        ended = self.hub.end_all("shutting_down")
        log.info("streams_drained", streams=ended)

    async def shutdown(self) -> None:
        if self.started:
            self.started = False
            await self.hub.stop()
            await self.pool.close()
            self.bridge.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        match = _STREAM_ROUTE.match(scope.get("raw_path") or scope["path"].encode())
        if match is None:
            await self.bridge(scope, receive, send)
            return
        if not self.started:  # served without a lifespan (some test harnesses): start on first use
            await self.startup()
        await self._stream(scope, receive, send, "job" if match[1] == b"jobs" else "session",
                           unquote(match[2].decode("latin-1")))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _stream(self, scope: Scope, receive: Receive, send: Send, kind: str, ident: str) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id", "")
        if not (0 < len(rid) <= 128 and rid.isprintable()):
            rid = uuid.uuid4().hex
        extra = [(b"x-request-id", rid.encode("latin-1", "replace"))]
        started = time.perf_counter()
        status = 200
        try:
            if scope["method"] != "GET":
                extra.append((b"allow", b"GET"))
                raise ApiError(405, "method_not_allowed", f"method {scope['method']} is not allowed here")
            if self.cfg.ingress_token is not None:
                problem = bearer_problem(headers.get("authorization"), self.cfg.ingress_token)
                if problem is not None:
                    log.warning("unauthorized", reason=problem, method=scope["method"], path=scope["path"],
                                request_id=rid)
                    extra.append((b"www-authenticate", b'Bearer realm="ingress"'))
                    raise ApiError(401, "unauthorized", f"{problem}: send Authorization: Bearer <INGRESS_TOKEN>")
            target = target_of(kind, ident, scope, self.limits)
            await open_stream(target, self.pool, self.hub, self.streams_cfg, send, receive, extra)
            return
        except ApiError as err:
            status = err.status
            await _answer_json(send, err.status, err.body(), extra)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            status = 503
            log.warning("database_unavailable", error=type(exc).__name__, request_id=rid)
            await _answer_json(send, 503, {"error": "database_unavailable",
                                           "message": "the database is unavailable; retry later"},
                               [*extra, (b"retry-after", b"1")])
        except Exception:
            status = 500
            log.exception("unhandled_error", request_id=rid)
            await _answer_json(send, 500, {"error": "internal_error", "message": "unexpected error"}, extra)
        log.info("request", method=scope["method"], path=scope["path"], status=status, request_id=rid,
                 ms=round((time.perf_counter() - started) * 1000, 2))


def _quiet_cancelled_connections(loop: asyncio.AbstractEventLoop) -> None:
    """Hypercorn cancels the connections still open when its graceful stop times out; asyncio then logs each
    as "Exception in callback ... CancelledError". Those are expected at a stop: keep the log for real errors."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), asyncio.CancelledError):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def _drain_on_sigterm(app: IngressApp) -> None:
    """End the streams at SIGTERM, then stop as the server would have.

    In a worker process of several, the parent stops the workers (hypercorn's shutdown event); SIGTERM
    reaching the worker itself (platforms such as Heroku signal every process) only drains the streams.
    Alone in its process, the server's own SIGTERM handler is kept and called after draining."""
    import multiprocessing

    loop = asyncio.get_running_loop()
    if multiprocessing.parent_process() is not None:
        signal.signal(signal.SIGTERM, lambda *_: loop.call_soon_threadsafe(app.drain))
        return
    # asyncio keeps the handler the server registered (private, so looked up defensively).
    handlers = getattr(loop, "_signal_handlers", {})
    previous = handlers.get(signal.SIGTERM)

    def on_sigterm() -> None:
        app.drain()
        if previous is not None:
            loop.call_later(0.2, previous._run)  # the last events reach the clients' sockets first

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)


def create_asgi_app(
    config: IngressConfig | None = None,
    streams: StreamConfig | None = None,
    *,
    pool: Pool | None = None,
    threads: int = 4,
) -> IngressApp:
    """The web process's app; ``pool``: the invoke endpoint's connection pool (tests pass their own)."""
    cfg = config or IngressConfig.from_env()
    return IngressApp(cfg, streams or StreamConfig.from_env(), create_app(cfg, pool), threads=threads)


def serve_app() -> Any:
    """What each web worker loads (ingress/__main__.py): logging configured, then the app."""
    import multiprocessing
    import os


    if multiprocessing.parent_process() is not None:
        # A worker process: the parent (python -m ingress) turns SIGTERM into a graceful stop of every
        # worker; platforms that signal every process (Heroku does) must not kill a worker mid-request.
        # Until the app has started (and drains streams on SIGTERM instead), SIGTERM is ignored.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure()
    app = create_asgi_app(threads=parse_int(os.environ, "WEB_THREADS", 4, minimum=1))
    app.drain_on_sigterm = True
    return app
