"""The web process's ASGI app (ingress/asgi.py) under a real Hypercorn server, in a thread of the test process:
real sockets and streaming, while the test can look at the app (its hub, its open streams)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hypercorn.asyncio import serve
from hypercorn.config import Config

from core.config import IngressConfig, StreamConfig
from ingress.asgi import IngressApp, create_asgi_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ingress_config(db_url: str, **overrides: object) -> IngressConfig:
    env = {"DATABASE_URL": db_url, "DB_POOL_TIMEOUT": "2"}
    cfg = IngressConfig.from_env(env)
    return IngressConfig(**{**cfg.__dict__, **overrides})  # type: ignore[arg-type]


def stream_config(**settings: str) -> StreamConfig:
    return StreamConfig.from_env(settings)


@contextmanager
def serving(app: IngressApp, *, idle_timeout_s: float = 5.0) -> Iterator[int]:
    """Serve ``app`` on a free loopback port until the block ends; yields the port."""
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.keep_alive_timeout = idle_timeout_s
    config.graceful_timeout = 1
    config.accesslog = None
    config.errorlog = None
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    async def main() -> None:
        async def trigger() -> None:
            await stop.wait()

        ready.set()
        await serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    ready.wait(10)
    for _ in range(200):  # listening?
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            threading.Event().wait(0.05)
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        loop.close()


@contextmanager
def app_serving(db_url: str, *, token: str | None = None, idle_timeout_s: float = 5.0,
                **stream_settings: str) -> Iterator[tuple[IngressApp, int]]:
    app = create_asgi_app(ingress_config(db_url, ingress_token=token), stream_config(**stream_settings), threads=2)
    try:
        with serving(app, idle_timeout_s=idle_timeout_s) as port:
            yield app, port
    finally:
        app.flask.extensions["pool"].close()
