"""Piston's job life cycle: validate a request (get_job), prime a box, execute, clean up.

Validation follows api/v2.js step by step, with JavaScript's loose typing, because its order and
wording are what clients see: the first failing rule wins.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import posixpath
import time
import uuid
from collections.abc import Callable
from typing import Any

from .execution import Execution, RunResult
from .isolation import Box, Limits
from .jscompat import js_string, node_base64_decode, node_hex_decode, node_utf8_encode, truthy, typeof
from .runtimes import Runtime, find_runtime
from .sandbox import Sandbox

log = logging.getLogger("localpiston")


class JobRejected(Exception):
    """A request get_job() refuses: `body` is what Piston sends with status 400."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.body = body


class JSTypeError(JobRejected):
    """A TypeError thrown inside get_job's promise: JSON.stringify(error) is `{}`."""

    def __init__(self, message: str) -> None:
        super().__init__({})
        self.js_message = message

    def __str__(self) -> str:
        return self.js_message


class JobQueue:
    """Piston's remaining_job_spaces + job_queue: a FIFO with no timeout."""

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.free < 1:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiting.append(future)
            await future  # the slot is handed over by release(); no cancellation in Piston
            return
        self.free -= 1

    def release(self) -> None:
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.free += 1


def _file_name(file: Any, index: int) -> Any:
    name = file.get("name") if isinstance(file, dict) else None
    return name if truthy(name) else f"file{index}.code"


def _encoding(file: Any) -> str:
    enc = file.get("encoding") if isinstance(file, dict) else None
    return enc if enc in ("base64", "hex", "utf8") else "utf8"


def _prop(value: Any, key: str, index: int | None = None) -> Any:
    """`value.key` in JS: undefined for primitives, a TypeError for null/undefined."""
    if value is None:
        raise JSTypeError(f"Cannot read property '{key}' of {'null' if index is not None else 'undefined'}")
    return value.get(key) if isinstance(value, dict) else None


class Job:
    def __init__(
        self,
        runtime: Runtime,
        files: list[dict[str, Any]],
        args: Any,
        stdin: str,
        timeouts: dict[str, Any],
        cpu_times: dict[str, Any],
        memory_limits: dict[str, Any],
    ) -> None:
        self.uuid = str(uuid.uuid4())
        self.runtime = runtime
        self.files = files
        self.args = args
        self.stdin = stdin
        self.timeouts = timeouts
        self.cpu_times = cpu_times
        self.memory_limits = memory_limits
        self.box: Box | None = None
        self._slot_taken = False
        self.started = time.monotonic()

    # -- Piston's prime(): wait for a slot, make the box, write the files ----------------------
    async def prime(self, sandbox: Sandbox, queue: JobQueue) -> Box:
        await queue.acquire()
        self._slot_taken = True
        self._queue = queue
        self._sandbox = sandbox
        box = await asyncio.to_thread(sandbox.create_box)
        self.box = box
        for file in self.files:
            self._write_file(box, file)
        return box

    def _write_file(self, box: Box, file: dict[str, Any]) -> None:
        name = file["name"]
        if not isinstance(name, str):
            raise TypeError('The "path" argument must be of type string')
        if name.endswith("/") or "\0" in name:
            raise IsADirectoryError(name)
        target = posixpath.normpath(posixpath.join(box.submission, name))
        rel = posixpath.relpath(target, box.submission)
        if rel.startswith(".."):
            raise PermissionError(f'File path "{name}" tries to escape parent directory: {rel}')
        content = file["content"]
        if file["encoding"] == "base64":
            data = node_base64_decode(content)
        elif file["encoding"] == "hex":
            data = node_hex_decode(content)
        else:
            data = node_utf8_encode(content)
        os.makedirs(posixpath.dirname(target), mode=0o755, exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(data)

    # -- execute(): the run stage (python has no compile stage) -------------------------------
    async def execute(
        self,
        sandbox: Sandbox,
        on_stage: Callable[[str], None] | None = None,
        on_output: Callable[[str, str], None] | None = None,
        on_spawn: Callable[[Execution], None] | None = None,
    ) -> dict[str, Any]:
        assert self.box is not None
        code_files = [f for f in self.files if f["encoding"] == "utf8"]
        if on_stage:
            on_stage("run")
        if isinstance(self.args, str):
            args = list(self.args)
        elif isinstance(self.args, list):
            args = [js_string(a) for a in self.args]
        else:
            raise TypeError("this.args is not iterable")
        argv = ["/bin/bash", os.path.join(self.runtime.pkgdir, "run"), code_files[0]["name"], *args]
        rt = self.runtime
        limits = Limits(
            wall_ms=_num(self.timeouts["run"]),
            cpu_ms=_num(self.cpu_times["run"]),
            memory=_num(self.memory_limits["run"]) if _num(self.memory_limits["run"]) >= 0 else -1,
            processes=rt.max_process_count,
            open_files=rt.max_open_files,
            file_size=rt.max_file_size,
        )
        execution = Execution(
            sandbox,
            self.box,
            argv,
            sandbox.env_for(self.box, rt.pkgdir, rt.language),
            limits,
            output_cap=None if on_output else rt.output_max_size,
            on_output=on_output,
        )
        if on_spawn is not None:
            on_spawn(execution)  # before any await: stdin sent after `stage` is never lost
        else:
            execution.write_stdin(node_utf8_encode(self.stdin))
            execution.close_stdin()
        await execution.start()
        run: RunResult = await execution.wait()
        self.result = run
        return {"run": run.as_dict(), "language": rt.language, "version": rt.version}

    def cleanup(self) -> None:
        if self.box is not None:
            self._sandbox.cleanup_box(self.box)
            self.box = None
        if self._slot_taken:
            self._slot_taken = False
            self._queue.release()

    def log_line(self, status: str) -> None:
        wall = int((time.monotonic() - self.started) * 1000)
        log.info("job %s %s-%s status=%s wall=%dms", self.uuid[:8], self.runtime.language, self.runtime.version, status, wall)


def _num(value: Any) -> float:
    """`value / 1000` in JS turns false/''/null into 0: treat every non-number as 0 (no limit)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return value


CONSTRAINTS = ("memory_limit", "timeout", "cpu_time")


def get_job(body: Any, runtimes: list[Runtime]) -> Job:
    """api/v2.js get_job(): the same checks in the same order, raising JobRejected."""
    body = body if isinstance(body, dict) else {}
    language = body.get("language")
    version = body.get("version")
    files = body.get("files")
    if not truthy(language) or not isinstance(language, str):
        raise JobRejected({"message": "language is required as a string"})
    if not truthy(version) or not isinstance(version, str):
        raise JobRejected({"message": "version is required as a string"})
    if not truthy(files) or not isinstance(files, list):
        raise JobRejected({"message": "files is required as an array"})
    for i, file in enumerate(files):
        if typeof(_prop(file, "content", i)) != "string":
            raise JobRejected({"message": f"files[{i}].content is required as a string"})
    rt = find_runtime(runtimes, language, version)
    if rt is None:
        raise JobRejected({"message": f"{language}-{version} runtime is unknown"})
    if not any(not truthy(f.get("encoding")) or f.get("encoding") == "utf8" for f in files):
        raise JobRejected({"message": "files must include at least one utf8 encoded file"})
    for constraint in CONSTRAINTS:
        for kind in ("compile", "run"):
            name = f"{kind}_{constraint}"
            value = body.get(name)
            configured = getattr(rt, f"{constraint}s")[kind]
            if not truthy(value):
                continue
            if typeof(value) != "number":
                raise JobRejected({"message": f"If specified, {name} must be a number"})
            if configured <= 0:
                continue
            if value > configured:
                raise JobRejected({"message": f"{name} cannot exceed the configured limit of {configured}"})
            if value < 0:
                raise JobRejected({"message": f"{name} must be non-negative"})

    stdin = body.get("stdin")
    if stdin is None:
        stdin = ""
    if isinstance(stdin, list):
        stdin = js_string(stdin) + "\n"  # [].slice(-1) is never '\n', and += stringifies the array
    elif not isinstance(stdin, str):
        raise JSTypeError("this.stdin.slice is not a function")
    elif not stdin.endswith("\n"):
        stdin += "\n"

    def pick(name: str, kind: str, default: int) -> Any:
        value = body.get(f"{kind}_{name}")
        return default if value is None else value

    args = body.get("args")
    return Job(
        runtime=rt,
        files=[{"name": _file_name(f, i), "content": f["content"], "encoding": _encoding(f)} for i, f in enumerate(files)],
        args=[] if args is None else args,
        stdin=stdin,
        timeouts={k: pick("timeout", k, rt.timeouts[k]) for k in ("run", "compile")},
        cpu_times={k: pick("cpu_time", k, rt.cpu_times[k]) for k in ("run", "compile")},
        memory_limits={k: pick("memory_limit", k, rt.memory_limits[k]) for k in ("run", "compile")},
    )
