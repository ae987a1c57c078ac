"""``python -m ingress``: serve the ingress with gunicorn (the Procfile's ``web``).

Configuration is checked before gunicorn starts, so a bad setting fails with one
clear line instead of a worker boot loop.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any

from core.config import ConfigError, IngressConfig, LogConfig, parse_int
from core.logging import configure, get_logger


def _serve(options: dict[str, Any]) -> None:
    # Imported only after our checks: importing gunicorn.config runs int(os.environ["WEB_CONCURRENCY"])
    # and would turn a bad value into a traceback instead of our one-line error.
    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):
        def __init__(self, options: dict[str, Any]) -> None:
            self.options = options
            super().__init__()

        def load_config(self) -> None:
            for key, value in self.options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from ingress.app import create_app

            configure()
            return create_app()

    _Server(options).run()


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
        port = int(args.port) if args.port else parse_int(os.environ, "PORT", 5000, minimum=1)
        workers = parse_int(os.environ, "WEB_CONCURRENCY", 2, minimum=1)
        threads = parse_int(os.environ, "WEB_THREADS", 4, minimum=1)
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
    _serve(
        {
            "bind": f"{args.host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "timeout": 30,
            "graceful_timeout": 20,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
