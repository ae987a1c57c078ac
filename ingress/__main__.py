"""``python -m ingress``: serve the web process with Hypercorn (the Procfile's ``web``): the SSE streams
natively on the event loop, the Flask app through ingress/wsgi_bridge.py (README: "Serving model").

Configuration is checked before the server starts, so a bad setting fails with one
clear line instead of a worker boot loop.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from core.config import ConfigError, IngressConfig, LogConfig, StreamConfig, parse_int
from core.logging import configure, get_logger


def _serve(host: str, port: int, workers: int, streams: StreamConfig) -> int:
    # Imported only after our checks, so a bad setting is one clear line, not a traceback.
    from hypercorn.config import Config
    from hypercorn.run import run

    config = Config()
    config.bind = [f"{host}:{port}"]
    # 0: serve in this process (one worker); N > 1: N worker processes sharing the socket.
    config.workers = 0 if workers == 1 else workers
    config.application_path = "ingress.asgi:serve_app()"
    # A connection that has not sent a complete request head (or sits idle between requests) is closed
    # after this: half-sent requests cost a socket for a bounded time, and never a thread (README).
    config.keep_alive_timeout = streams.idle_timeout_s
    config.graceful_timeout = 5  # SIGTERM: requests in flight finish; open streams end (clients resume by id)
    config.backlog = 2048  # bursts of connections (1,000 streams opening at once) wait in the kernel, not refused
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    return run(config)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingress", description="Serve the invoke endpoint.")
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", default=None)
    args = parser.parse_args(argv)
    try:
        cfg = IngressConfig.from_env()
        LogConfig.from_env()
        streams = StreamConfig.from_env()
        port = int(args.port) if args.port else parse_int(os.environ, "PORT", 5000, minimum=1)
        workers = parse_int(os.environ, "WEB_CONCURRENCY", 2, minimum=1)
        parse_int(os.environ, "WEB_THREADS", 4, minimum=1)  # checked here, used by each worker (ingress/asgi.py)
        if cfg.ingress_token is None and not cfg.allow_unauthenticated and not _is_loopback(args.host):
            raise ConfigError(
                f"INGRESS_TOKEN is not set, so anyone who can reach {args.host}:{port} could queue agent runs; "
                "set INGRESS_TOKEN (and send it from Next.js), bind --host 127.0.0.1, or set ALLOW_UNAUTHENTICATED=1"
            )
    except (ConfigError, ValueError) as exc:
        print(f"ingress: configuration error: {exc}", file=sys.stderr)
        return 2
    if cfg.ingress_token is None:
        configure()
        get_logger("ingress").warning(
            "unauthenticated", host=args.host,
            detail="INGRESS_TOKEN is not set: invoke requests are accepted without a bearer token",
        )
    return _serve(args.host, port, workers, streams)


if __name__ == "__main__":
    raise SystemExit(main())
