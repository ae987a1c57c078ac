"""Start-up: configuration, isolation probing, the python package, the aiohttp site."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from aiohttp import web

from .config import Config
from .http_api import State, make_app
from .job import JobQueue
from .probe import install_package, make_root, probe_isolation
from .runtimes import Runtime
from .sandbox import Sandbox

log = logging.getLogger("localpiston")


async def serve(config: Config, host: str, port: int) -> None:
    root = make_root()
    try:
        isolation = probe_isolation(config.python, config.disable_networking, root)
        pkgdir = install_package(root, isolation.version, isolation.python)
        runtime = Runtime.python(isolation.version, pkgdir, config)
        sandbox = Sandbox(isolation, root)
        await sandbox.start()
        state = State([runtime], sandbox, JobQueue(config.max_concurrent_jobs), websocket=config.websocket)
        runner = web.AppRunner(make_app(state), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        raise
    notes = "; ".join([*isolation.notes, *([] if config.websocket else ["no /api/v2/connect: PISTON_DISABLE_WEBSOCKET=true"])])
    log.info(
        "localpiston (Piston API 3.1.1, dev/test only) on http://%s:%d: %s%s",
        host, port, isolation.summary(), f" [{notes}]" if notes else "",
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
        await sandbox.stop()


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s localpiston %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
