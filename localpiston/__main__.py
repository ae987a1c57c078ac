"""python -m localpiston [--host 127.0.0.1] [--port 2000]"""

from __future__ import annotations

import argparse
import asyncio
import sys

from .config import ConfigError, load_config
from .server import serve, setup_logging


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"localpiston: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    default_host, _, default_port = config.bind_address.rpartition(":")
    parser = argparse.ArgumentParser(prog="python -m localpiston", description="Piston-compatible local sandbox (dev/test only)")
    parser.add_argument("--host", default=default_host or "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(default_port) if default_port.isdigit() else 2000)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        asyncio.run(serve(config, args.host, args.port))
    except OSError as exc:
        print(f"localpiston: cannot start: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"localpiston: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
