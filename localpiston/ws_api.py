"""WebSocket /api/v2/connect, with the message order, close codes and quirks of Piston 3.1.

- init → `runtime` (after the box is primed, i.e. after any queue wait) → `stage` → data → `exit`
  → close 4999 "Job Completed". Any error: `{"type":"error","message"}` then close 4002.
- 4000 second init, 4001 no init within 1 s, 4003 data/signal before init, 4004 data for a stream
  other than stdin, 4005 unknown signal name.
- stdin frames that arrive before the process exists are dropped; stdin is never closed; signals are
  accepted and never delivered; there is no output cap; a closed socket does not stop the job.
- After its close frame the server keeps the TCP connection until the client's close frame (or
  CLOSE_TIMEOUT), as the `ws` library does: ending it at once would reset a client whose last frames
  were still on the way. Frames that arrive in that wait are read and dropped (Piston would still hand
  their stdin to a job that outlives a 4002).
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
CLOSE_TIMEOUT = 30.0  # `ws`'s closeTimeout: how long a sent close frame waits for the peer's


class Connection:
    def __init__(self, ws: web.WebSocketResponse, state: State) -> None:
        self.ws = ws
        self.state = state
        self.job: Job | None = None
        self.execution: Execution | None = None
        self.outbox: asyncio.Queue[tuple[str, Any, Any]] = asyncio.Queue()
        self.dead = False  # the socket is gone: drop everything the job still produces
        # Set by the sender once every earlier frame went out; the reading task closes (see `serve`).
        self.close_request: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

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
            if self.ws.closed or self.close_request.done():
                continue  # like the `ws` library: sends on a closing or closed socket go nowhere
            if kind == "close":
                self.close_request.set_result((a, b))
                continue
            try:
                await self.ws.send_str(a)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("websocket send failed: %s", exc)

    # -- incoming -------------------------------------------------------------------------------
    async def serve(self) -> None:
        """Read frames until the peer closes, or until our close request and then the peer's close frame.

        The close is made here, by the only task that reads: aiohttp's close() from another task while this
        one waits in receive() ends the TCP connection without waiting for the peer's close frame."""
        while not self.ws.closed:
            receiving = asyncio.ensure_future(self.ws.receive())
            await asyncio.wait((receiving, self.close_request), return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done():
                receiving.cancel()  # cancel-safe: an unread frame stays in aiohttp's queue
                await asyncio.wait((receiving,))
            if not receiving.cancelled():
                msg = receiving.result()
                if msg.type == WSMsgType.TEXT:
                    self.on_message(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.on_message(msg.data.decode("utf-8", "replace"))
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    return  # the peer closed (aiohttp answered its close frame) or the connection broke
            if self.close_request.done():
                code, reason = self.close_request.result()
                # Sends the close frame, then reads (and drops) frames until the peer's close or the timeout.
                await self.ws.close(code=code, message=reason.encode())
                return

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
    ws = web.WebSocketResponse(autoping=True, max_msg_size=0, timeout=CLOSE_TIMEOUT)
    await ws.prepare(request)
    conn = Connection(ws, request.app[STATE_KEY])
    sender = asyncio.ensure_future(conn.sender())

    def init_timeout() -> None:
        if conn.job is None:
            conn.close(4001, "Initialization Timeout")

    timer = asyncio.get_running_loop().call_later(INIT_TIMEOUT, init_timeout)
    try:
        await conn.serve()
    finally:
        timer.cancel()
        conn.dead = True
        conn.outbox.put_nowait(("stop", None, None))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sender, 5)
    return ws
