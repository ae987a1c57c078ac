"""The HTTP side: Express + body-parser behaviour in front of the v2 routes.

Request handling follows Piston's middleware order: body parsing for every request (so a malformed
JSON body gets 400 `{"stack": ...}` on any path), then the /api/v2 router (415 for a non-JSON
content type on any method but GET/HEAD/OPTIONS), then the routes, `GET /`, and 404.
Express matches paths case-insensitively and ignores one trailing slash; so does this.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from . import PISTON_VERSION
from .job import JobQueue, JobRejected, get_job
from .jscompat import JSONSyntaxError, parse_json_strict, syntax_error_stack
from .runtimes import Runtime
from .sandbox import Sandbox

log = logging.getLogger("localpiston")

BODY_LIMIT = 100 * 1024  # body-parser's default '100kb'
TOO_LARGE_STACK = (
    "PayloadTooLargeError: request entity too large\n"
    "    at readStream (/piston_api/node_modules/raw-body/index.js:155:17)\n"
    "    at getRawBody (/piston_api/node_modules/raw-body/index.js:108:12)\n"
    "    at read (/piston_api/node_modules/body-parser/lib/read.js:77:3)"
)


class State:
    def __init__(self, runtimes: list[Runtime], sandbox: Sandbox, queue: JobQueue, *, websocket: bool = True) -> None:
        self.runtimes = runtimes
        self.sandbox = sandbox
        self.queue = queue
        self.websocket = websocket  # False: /api/v2/connect is a 404 even for an upgrade request
        self.tasks: set[asyncio.Task[Any]] = set()


STATE_KEY = web.AppKey("localpiston_state", State)


def send_json(body: Any, status: int = 200) -> web.Response:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return web.Response(
        status=status,
        body=text.encode("utf-8"),
        headers={"Content-Type": "application/json; charset=utf-8", "X-Powered-By": "Express"},
    )


def send_empty(status: int) -> web.Response:
    return web.Response(status=status, body=b"", headers={"X-Powered-By": "Express"})


class BodyError(Exception):
    def __init__(self, stack: str) -> None:
        super().__init__(stack)
        self.stack = stack


async def _read_limited(request: web.Request) -> bytes:
    length = request.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > BODY_LIMIT:
        raise BodyError(TOO_LARGE_STACK)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > BODY_LIMIT:
            raise BodyError(TOO_LARGE_STACK)
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_body(request: web.Request) -> Any:
    """body-parser.urlencoded() then body-parser.json(): returns req.body."""
    headers = request.headers
    has_body = "Transfer-Encoding" in headers or headers.get("Content-Length", "").strip().isdigit()
    ctype = headers.get("Content-Type", "")
    mime, _, params = ctype.partition(";")
    mime = mime.strip().lower()
    if not has_body or mime not in ("application/json", "application/x-www-form-urlencoded"):
        return {}
    charset = ""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    encoding = headers.get("Content-Encoding", "identity").lower()
    if encoding != "identity":
        raise BodyError(f'UnsupportedMediaTypeError: unsupported content encoding "{encoding}"')
    if mime == "application/json":
        if charset and not charset.startswith("utf-"):
            raise BodyError(f'UnsupportedMediaTypeError: unsupported charset "{charset.upper()}"')
        raw = await _read_limited(request)
        if not raw:
            return {}
        try:
            return parse_json_strict(raw.decode("utf-8", "replace"))
        except JSONSyntaxError as exc:
            raise BodyError(syntax_error_stack(str(exc))) from None
    if charset and charset != "utf-8":
        raise BodyError(f'UnsupportedMediaTypeError: unsupported charset "{charset.upper()}"')
    await _read_limited(request)
    return {}  # form bodies are never used: the router answers 415 for them


async def execute(request: web.Request, body: Any) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        job = get_job(body, state.runtimes)
    except JobRejected as exc:
        return send_json(exc.body, 400)
    # Run to completion even if the client goes away (Piston does not cancel jobs).
    task = asyncio.ensure_future(_run_job(state, job))
    return await asyncio.shield(task)


async def _run_job(state: State, job: Any) -> web.Response:
    status = "XX"
    try:
        await job.prime(state.sandbox, state.queue)
        result = await job.execute(state.sandbox)
        status = result["run"]["status"] or "OK"
        return send_json(result)
    except Exception as exc:
        log.warning("job %s failed: %s", job.uuid[:8], exc)
        status = "500"
        return send_empty(500)
    finally:
        try:
            await asyncio.to_thread(job.cleanup)
        except Exception as exc:
            log.warning("job %s cleanup failed: %s", job.uuid[:8], exc)
        job.log_line(status)


ROUTES = {
    "/api/v2/runtimes": ("GET",),
    "/api/v2/execute": ("POST",),
    "/api/v2/packages": ("GET", "POST", "DELETE"),
    "/": ("GET",),
}


async def dispatch(request: web.Request) -> web.StreamResponse:
    from .ws_api import connect  # local import: ws_api imports this module

    method = request.method
    path = request.path.lower()
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    try:
        body = await parse_body(request)
    except BodyError as exc:
        return send_json({"stack": exc.stack}, 400)

    in_router = path == "/api/v2" or path.startswith("/api/v2/")
    json_typed = request.headers.get("Content-Type", "").startswith("application/json")
    if in_router and method not in ("GET", "HEAD", "OPTIONS") and not json_typed:
        return send_json({"message": "requests must be of type application/json"}, 415)

    if method == "OPTIONS" and path in ROUTES:
        allowed = ",".join(sorted({*ROUTES[path], *(("HEAD",) if "GET" in ROUTES[path] else ())}))
        return web.Response(status=200, text=allowed, headers={"Allow": allowed, "X-Powered-By": "Express"})
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    # Disabled, it falls through to the 404 Piston gives a plain GET (what a proxy that drops upgrades sends).
    if path == "/api/v2/connect" and method == "GET" and upgrade and request.app[STATE_KEY].websocket:
        return await connect(request)
    if path == "/api/v2/runtimes" and method in ("GET", "HEAD"):
        state = request.app[STATE_KEY]
        return send_json([rt.describe() for rt in state.runtimes])
    if path == "/api/v2/execute" and method == "POST":
        return await execute(request, body)
    if path == "/api/v2/packages" and method in ("GET", "POST", "DELETE"):
        # Real Piston fetches its package index from GitHub here and crashes when offline.
        log.warning("%s /api/v2/packages is not supported (it crashes an offline Piston)", method)
        return send_empty(500)
    if path == "/" and method in ("GET", "HEAD"):
        return send_json({"message": f"Piston v{PISTON_VERSION}"})
    return send_json({"message": "Not Found"}, 404)


def make_app(state: State) -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app[STATE_KEY] = state
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
