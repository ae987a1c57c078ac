"""python -m fakeopenai [--host 127.0.0.1] [--port 8090]   (key: FAKEOPENAI_API_KEY; base URL: http://host:port/v1)"""

from __future__ import annotations

import argparse
import os
import sys

from aiohttp import web

from fakeopenai.server import make_app

DEFAULT_KEY = "fakeopenai-dev-key"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fakeopenai",
                                     description="Canned stand-in for the OpenAI chat completions API (dev/test)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    # From the environment, not argv: a key on the command line shows up in `ps`.
    key = os.environ.get("FAKEOPENAI_API_KEY") or DEFAULT_KEY
    print(f"fakeopenai: canned answers on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    try:
        web.run_app(make_app(key), host=args.host, port=args.port, print=None, access_log=None, shutdown_timeout=0.5)
    except OSError as exc:
        print(f"fakeopenai: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
