"""WebSocket /api/v2/connect, with the message order, close codes and quirks of Piston 3.1.

- init → `runtime` (after the box is primed, i.e. after any queue wait) → `stage` → data → `exit`
  → close 4999 "Job Completed". Any error: `{"type":"error","message"}` then close 4002.
- 4000 second init, 4001 no init within 1 s, 4003 data/signal before init, 4004 data for a stream
  other than stdin, 4005 unknown signal name.
- stdin frames that arrive before the process exists are dropped; stdin is never closed; signals are
  accepted and never delivered; there is no output cap; a closed socket does not stop the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from .execution import Execution
from .http_api import STATE_KEY, State
from .job import Job, JobRejected, JSTypeError, get_job
from .jscompat import JSONSyntaxError, js_string, node_utf8_encode, parse_json
from .runtimes import SIGNALS

log = logging.getLogger("localpiston")

INIT_TIMEOUT = 1.0


class Connection:
    def __init__(self, ws: web.WebSocketResponse, state: State) -> None:
        self.ws = ws
        self.state = state
        self.job: Job | None = None
        self.execution: Execution | None = None
        self.outbox: asyncio.Queue[tuple[str, Any, Any]] = asyncio.Queue()
        self.closing = False
        self.dead = False  # the socket is gone: drop everything the job still produces

    # -- outgoing, strictly in order ------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        if self.dead:
            return
        self.outbox.put_nowait(("send", json.dumps(message, ensure_ascii=False, separators=(",", ":")), None))

    def close(self, code: int, reason: str) -> None:
        if self.dead:
            return
        self.outbox.put_nowait(("close", code, reason))

    async def sender(self) -> None:
        while True:
            kind, a, b = await self.outbox.get()
            if kind == "stop":
                return
            if self.ws.closed or self.closing:
                continue  # like the `ws` library: sends on a closed socket go nowhere
            try:
                if kind == "send":
                    await self.ws.send_str(a)
                else:
                    self.closing = True
                    await self.ws.close(code=a, message=b.encode())
            except (ConnectionError, RuntimeError) as exc:
                log.debug("websocket send failed: %s", exc)

    # -- incoming -------------------------------------------------------------------------------
    def on_message(self, raw: str) -> None:
        try:
            msg = parse_json(raw)
            if msg is None:
                raise TypeError("Cannot read property 'type' of null")
            kind = msg.get("type") if isinstance(msg, dict) else None
            if kind == "init":
                if self.job is None:
                    self.job = get_job(msg, self.state.runtimes)
                    task = asyncio.ensure_future(self.run_job(self.job))
                    self.state.tasks.add(task)
                    task.add_done_callback(self.state.tasks.discard)
                else:
                    self.close(4000, "Already Initialized")
            elif kind == "data":
                if self.job is None:
                    self.close(4003, "Not yet initialized")
                elif msg.get("stream") == "stdin":
                    self.write_stdin(msg)
                else:
                    self.close(4004, "Can only write to stdin")
            elif kind == "signal":
                if self.job is None:
                    self.close(4003, "Not yet initialized")
                elif msg.get("signal") not in SIGNALS.values():
                    self.close(4005, "Invalid signal")
                # else: Piston emits 'signal' but only listens for 'kill': never delivered.
        except JobRejected as exc:
            self.fail(str(exc) if isinstance(exc, JSTypeError) else exc.body.get("message", ""))
        except (JSONSyntaxError, TypeError) as exc:
            self.fail(str(exc))

    def write_stdin(self, msg: dict[str, Any]) -> None:
        if self.execution is None:
            return  # no 'stdin' listener yet: the frame is lost
        if "data" not in msg:
            raise TypeError(
                'The "chunk" argument must be of type string or an instance of Buffer or Uint8Array. Received undefined'
            )
        data = msg["data"]
        if data is None:
            raise TypeError("May not write null values to stream")
        if not isinstance(data, str):
            raise TypeError(
                'The "chunk" argument must be of type string or an instance of Buffer or Uint8Array. '
                f"Received type {type(data).__name__ if not isinstance(data, int | float) else 'number'} ({js_string(data)})"
            )
        self.execution.write_stdin(node_utf8_encode(data))

    def fail(self, message: str) -> None:
        self.send({"type": "error", "message": message})
        self.close(4002, "Notified Error")

    async def run_job(self, job: Job) -> None:
        sandbox = self.state.sandbox
        status = "XX"
        try:
            try:
                await job.prime(sandbox, self.state.queue)
                self.send({"type": "runtime", "language": job.runtime.language, "version": job.runtime.version})

                def on_spawn(execution: Execution) -> None:
                    self.execution = execution

                result = await job.execute(
                    sandbox,
                    on_stage=lambda stage: self.send({"type": "stage", "stage": stage}),
                    on_output=lambda stream, data: self.send({"type": "data", "stream": stream, "data": data}),
                    on_spawn=on_spawn,
                )
                run = result["run"]
                status = run["status"] or "OK"
                self.send({"type": "exit", "stage": "run", "code": run["code"], "signal": run["signal"]})
            finally:
                await asyncio.to_thread(job.cleanup)
            self.close(4999, "Job Completed")
        except Exception as exc:
            log.warning("job %s failed: %s", job.uuid[:8], exc)
            self.fail(str(exc))
        finally:
            job.log_line(status)


async def connect(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
    await ws.prepare(request)
    conn = Connection(ws, request.app[STATE_KEY])
    sender = asyncio.ensure_future(conn.sender())

    def init_timeout() -> None:
        if conn.job is None:
            conn.close(4001, "Initialization Timeout")

    timer = asyncio.get_running_loop().call_later(INIT_TIMEOUT, init_timeout)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                conn.on_message(msg.data)
            elif msg.type == WSMsgType.BINARY:
                conn.on_message(msg.data.decode("utf-8", "replace"))
    finally:
        timer.cancel()
        conn.dead = True
        conn.outbox.put_nowait(("stop", None, None))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sender, 5)
    return ws
