"""A run over Piston's batch transport, ``POST /api/v2/execute``: the whole output once the program ended.

Piston queues jobs without a timeout, so the read timeout (run_timeout + the execute margin) is the only
bound on a busy server. Output is handed to ``on_stdout`` as one chunk, with a writer that refuses stdin,
so callers have one code path for both transports. The server's 1024-character output cap applies here
(status OL / EL).
"""

from __future__ import annotations

import time
from typing import Any

from dispatcher.sandbox.piston.endpoint import Endpoint
from dispatcher.sandbox.piston.http import PistonHttp, json_or_none, raise_for_status
from dispatcher.sandbox.piston.status import STOPPED_MESSAGE, execute_status, tail
from dispatcher.sandbox.port import NoStdin, RunResult, RunStatus, SandboxError, SandboxRequest, Transport


def run_execute(endpoint: Endpoint, http: PistonHttp, request: SandboxRequest) -> RunResult:
    body = {**endpoint.body(request), "stdin": request.stdin}
    limits = request.limits
    read_s = limits.run_timeout_ms / 1000 + endpoint.execute_margin_s if limits.run_timeout_ms > 0 else None
    t0 = time.monotonic()
    resp = http.call("POST", "/execute", timeout=(endpoint.connect_timeout_s, read_s), body=body,
                     should_stop=request.should_stop)
    elapsed_ms = (time.monotonic() - t0) * 1000
    if resp is None:
        return RunResult(transport=Transport.EXECUTE, status=RunStatus.STOPPED, code=None, signal=None,
                         message=STOPPED_MESSAGE, stdout="", stderr_tail="", wall_ms=elapsed_ms, cpu_ms=None,
                         memory_bytes=None, started=True)  # the request was sent: the program may be running
    if resp.status_code != 200:
        raise_for_status(resp)
    data = json_or_none(resp)
    stage = None
    if isinstance(data, dict):
        # Piston answers with only `compile` when compilation failed.
        stage = data.get("run") if isinstance(data.get("run"), dict) else data.get("compile")
    if not isinstance(stage, dict):
        raise SandboxError("Piston answered /execute with 200 but no run object")
    return _result(endpoint, stage, request, elapsed_ms)


def _result(endpoint: Endpoint, run: dict[str, Any], request: SandboxRequest, elapsed_ms: float) -> RunResult:
    wall = run.get("wall_time")
    wall_ms = float(wall) if isinstance(wall, int | float) else elapsed_ms
    status, message = execute_status(run, wall_ms, request.limits)
    stdout = run.get("stdout") or ""
    stderr = run.get("stderr") or ""
    if request.on_stdout is not None and stdout:
        request.on_stdout(stdout, NoStdin())
    if request.on_stderr is not None and stderr:
        request.on_stderr(stderr)
    cpu, memory = run.get("cpu_time"), run.get("memory")
    return RunResult(
        transport=Transport.EXECUTE,
        status=status,
        code=run.get("code"),
        signal=run.get("signal"),
        message=message,
        stdout=stdout,
        stderr_tail=tail(stderr, endpoint.stderr_tail_chars),
        wall_ms=wall_ms,
        cpu_ms=float(cpu) if isinstance(cpu, int | float) else None,
        memory_bytes=int(memory) if isinstance(memory, int | float) else None,
        started=True,
    )
