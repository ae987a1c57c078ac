"""Run an agent on your own machine the way the hub runs it in its sandbox.

``python -m hub run path/to/agent --prompt "hi"`` copies the agent's files into a temporary
folder laid out as the dispatcher lays out the sandbox (hub/_box.py): ``hub.py``, the run's
context in a JSON file beside it and the same small launcher, runs ``python3 _hub_launcher.py``
there, and reads the same stdout
line protocol: messages, progress, user variables and logs are printed as they arrive (a streamed
message chunk by chunk), and ``call_llm`` / ``call_agent`` / ``http`` are answered on the agent's stdin
(``call_llm(..., stream=True)`` chunk by chunk, through google-genai's ``generate_content_stream``).

- ``call_llm`` goes to Gemini through google-genai when ``GEMINI_API_KEY`` is set
  (``GEMINI_BASE_URL`` and ``HUB_LLM_MODEL`` are honoured), and an ``openai:<name>`` model through the
  ``openai`` SDK when ``OPENAI_API_KEY`` is set (``OPENAI_BASE_URL``); otherwise the agent gets
  ``hub.LLMError`` with kind ``not_configured`` and a line saying to set the key.
- ``call_agent`` raises ``hub.HubError`` (kind ``not_available_locally``).
- ``http`` is made by the runner itself with the hub's rules (hub/_httplocal.py): ``--allow-host`` plays the
  operator's allow-list, ``--secret SECRET_NAME=value`` a withheld secret, ``--allow-private`` loopback and
  private addresses (a local test server).

This module is not part of what the hub injects into the sandbox: only ``hub/__init__.py`` is.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_hex
from typing import IO, Any

from ._box import (
    CONTEXT_NAME,
    HUB_NAME,
    LAUNCHER_NAME,
    RESERVED,
    BoxError,
    choose_entrypoint,
    context_text,
    hub_source,
    launcher_source,
)
from ._hosts import HostPatternError, HostPatterns
from ._httplocal import LocalHttp, LocalHttpSettings
from ._secrets import is_secret_name, withhold

MARKER = "\x1ehub:"
DEFAULT_MODEL = "gemini-2.5-flash"  # the dispatcher's default (HUB_LLM_MODEL)
_SKIP_DIRS = {"__pycache__", ".git", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", "node_modules"}


class LocalRunError(BoxError):
    """The agent cannot be run (bad option, unreadable history...); the message says why."""


@dataclass
class RunReport:
    """What a local run produced, besides what it printed."""

    exit_code: int
    messages: list[str] = field(default_factory=list)
    user_vars: dict[str, str] = field(default_factory=dict)
    logs: list[tuple[str, str]] = field(default_factory=list)
    progress: list[tuple[float, str | None]] = field(default_factory=list)
    http: list[str] = field(default_factory=list)  # one line per hub.http call, as the hub's JobLog has it


def agent_files(path: Path) -> tuple[Path, list[str]]:
    """The agent's folder and its files (relative, '/'-separated), as the hub would ship them."""
    if path.is_file():
        return path.parent, [path.name]
    if not path.is_dir():
        raise LocalRunError(f"no such agent folder or file: {path}")
    names: list[str] = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            names.append(Path(root, name).relative_to(path).as_posix())
    return path, names


def build_context(
    *,
    prompt: str,
    env_vars: Mapping[str, str],
    user_vars: Mapping[str, str],
    history: Sequence[Mapping[str, Any]],
    agent_name: str,
    nonce: str,
) -> dict[str, Any]:
    """The context the hub would ship: the prompt is the last user message of the history."""
    # datetime.UTC is 3.11+; the SDK supports 3.10.
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: UP017
    chat = [dict(m) for m in history] + [{"role": "user", "content": prompt, "timestamp": now}]
    return {
        "version": 1,
        "nonce": nonce,
        "transport": "ws",  # call_llm / call_agent get answers, as on the hub's WebSocket transport
        "agent": {"id": "local", "name": agent_name, "version": "local"},
        "job_id": "local-job",
        "attempt": 1,
        "session_id": "local-session",
        "user_id": "local-user",
        "prompt": prompt,
        "env_vars": dict(env_vars),
        "user_vars": dict(user_vars),
        "chat_history": chat,
        "history_cut": 0,
    }


def load_history(path: Path) -> list[dict[str, Any]]:
    """A ``--history`` file: a JSON list of ``{"role": "user"|"agent"|"system", "content": str, "timestamp"?}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LocalRunError(f"cannot read history file {path}: {exc}") from None
    if not isinstance(data, list):
        raise LocalRunError(f"history file {path}: expected a JSON list of messages")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("content"), str) or item.get("role") not in (
            "user", "agent", "system"):
            raise LocalRunError(f"history file {path}: item {i} needs role user|agent|system and a str content")
        out.append({"role": item["role"], "content": item["content"],
                    "timestamp": str(item.get("timestamp") or "1970-01-01T00:00:00.000Z")})
    return out


# --- call_llm / call_agent answers -------------------------------------------------------


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"kind": kind, "message": message}}


def _history_messages(context: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """The session's turns as (role, text) with role user|agent, and its system messages apart."""
    turns: list[tuple[str, str]] = []
    system: list[str] = []
    for m in context.get("chat_history") or []:
        content = m.get("content")
        if not isinstance(content, str) or not content:
            continue
        if m.get("role") == "system":
            system.append(content)
        elif m.get("role") in ("user", "agent"):
            turns.append((m["role"], content))
    return turns, system


def answer_openai(params: Mapping[str, Any], context: Mapping[str, Any], env: Mapping[str, str], model: str
                  ) -> dict[str, Any]:
    """call_llm with an ``openai:<name>`` model through the openai SDK, or an error reply saying what is missing."""
    key = (env.get("OPENAI_API_KEY") or "").strip()
    if not key:
        return _error("not_configured", "set OPENAI_API_KEY to answer openai: models locally "
                                        "(OPENAI_BASE_URL for another OpenAI-compatible endpoint)")
    try:
        import openai
    except ImportError:
        return _error("not_configured", "openai: models need the openai SDK locally: pip install 'agenthub-sdk[llm]'")
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return _error("bad_request", "prompt must be a non-empty str")
    system = params.get("system")
    turns: list[tuple[str, str]] = []
    if params.get("history"):
        turns, extra_system = _history_messages(context)
        if extra_system:
            system = "\n\n".join([*extra_system, *([system] if system else [])])
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "assistant" if role == "agent" else "user", "content": text} for role, text in turns]
    messages.append({"role": "user", "content": prompt})
    kwargs: dict[str, Any] = {"model": model, "messages": messages}
    if params.get("temperature") is not None:
        kwargs["temperature"] = params["temperature"]
    if params.get("max_output_tokens") is not None:
        kwargs[env.get("OPENAI_MAX_TOKENS_FIELD") or "max_completion_tokens"] = params["max_output_tokens"]
    client = openai.OpenAI(api_key=key, base_url=(env.get("OPENAI_BASE_URL") or "").rstrip("/") or None,
                           timeout=float(env.get("HUB_LLM_TIMEOUT_S") or 60), max_retries=0)
    try:
        completion = client.chat.completions.create(**kwargs)
    except openai.APIStatusError as exc:
        code = exc.status_code
        kind = ("auth" if code in (401, 403) else "rate_limited" if code == 429
                else "unavailable" if code in (408, 409) or code >= 500 else "bad_request")
        return _error(kind, f"the OpenAI-compatible endpoint answered HTTP {code}".replace(key, "***"))
    except openai.OpenAIError as exc:  # timeouts, refused connections
        return _error("unavailable", f"cannot reach the OpenAI-compatible endpoint ({type(exc).__name__})")
    finally:
        client.close()
    choice = completion.choices[0] if completion.choices else None
    text = (choice.message.content or "") if choice is not None else ""
    if not text:
        finish = choice.finish_reason if choice is not None else None
        if finish == "length":
            return _error("max_tokens", "the model reached max_output_tokens before writing any text")
        return _error("blocked", f"the endpoint returned no text (finish_reason {finish or 'none'})")
    return {"ok": True, "result": {"text": text}}


def answer_llm(params: Mapping[str, Any], context: Mapping[str, Any], env: Mapping[str, str],
               on_chunk: Callable[[str], None] | None = None) -> dict[str, Any]:
    """call_llm through Gemini (google-genai) or, for ``openai:<name>``, the openai SDK; or an error reply saying
    what is missing. ``on_chunk``: a streaming call's pieces of text, as Gemini produces them (an openai: model's
    whole text comes as one piece)."""
    model = str(params.get("model") or env.get("HUB_LLM_MODEL") or DEFAULT_MODEL).strip()
    prefix, sep, name = model.partition(":")
    if sep and prefix.lower() == "openai":
        body = answer_openai(params, context, env, name)
        if on_chunk is not None and body["ok"]:
            on_chunk(body["result"]["text"])
        return body
    if sep and prefix.lower() == "gemini":
        model = name
    key = (env.get("GEMINI_API_KEY") or "").strip()
    if not key:
        return _error("not_configured", "set GEMINI_API_KEY to answer call_llm locally (GEMINI_BASE_URL for another endpoint)")
    try:
        from google import genai
        from google.genai import errors as genai_errors
        from google.genai import types
    except ImportError:
        return _error("not_configured", "call_llm needs google-genai locally: pip install 'agenthub-sdk[llm]'")
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return _error("bad_request", "prompt must be a non-empty str")
    contents: list[Any] = []
    system = params.get("system")
    if params.get("history"):
        turns, extra_system = _history_messages(context)
        for role, text in turns:
            contents.append(types.Content(role="user" if role == "user" else "model", parts=[types.Part(text=text)]))
        if extra_system:
            system = "\n\n".join([*extra_system, *([system] if system else [])])
    contents.append(types.Content(role="user", parts=[types.Part(text=prompt)]))
    model = model.removeprefix("models/")
    timeout_s = float(env.get("HUB_LLM_TIMEOUT_S") or 60)
    client = genai.Client(
        api_key=key,
        vertexai=False,
        http_options=types.HttpOptions(base_url=(env.get("GEMINI_BASE_URL") or "").rstrip("/") or None,
                                       timeout=int(timeout_s * 1000)),
    )
    config = types.GenerateContentConfig(system_instruction=system, temperature=params.get("temperature"),
                                         max_output_tokens=params.get("max_output_tokens"))
    pieces: list[str] = []
    try:
        if on_chunk is not None:
            response = None
            for response in client.models.generate_content_stream(model=model, contents=contents, config=config):
                piece = response.text or ""
                if piece:
                    pieces.append(piece)
                    on_chunk(piece)
            if pieces:
                return {"ok": True, "result": {"text": "".join(pieces)}}
            if response is None:
                return _error("unavailable", "Gemini's stream ended without an answer")
        else:
            response = client.models.generate_content(model=model, contents=contents, config=config)
    except genai_errors.APIError as exc:
        code = int(exc.code or 0)
        kind = ("auth" if code in (401, 403) else "rate_limited" if code == 429
                else "unavailable" if code == 408 or code >= 500 else "bad_request")
        cut = f" (the stream broke after {len(pieces)} chunk(s))" if pieces else ""
        return _error(kind, f"Gemini answered HTTP {code}: {exc.message or exc.status or ''}{cut}".replace(key, "***"))
    except Exception as exc:  # the SDK's httpx errors: timeouts, refused connections
        return _error("unavailable", f"cannot reach Gemini ({type(exc).__name__})")
    text = response.text or ""
    if not text:
        candidate = response.candidates[0] if response.candidates else None
        finish = candidate.finish_reason.value if candidate is not None and candidate.finish_reason else None
        if finish == "MAX_TOKENS":
            return _error("max_tokens", "the model reached max_output_tokens before writing any text")
        return _error("blocked", f"Gemini returned no text (finishReason {finish or 'none'})")
    return {"ok": True, "result": {"text": text}}


def answer_call(method: Any, params: Any, context: Mapping[str, Any], env: Mapping[str, str],
                http: LocalHttp | None = None, on_chunk: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The reply body (without ``id``) for one call line (``http``: what a run's hub.http calls go through;
    ``on_chunk``: where a streaming call_llm's chunks go before this final reply)."""
    if not isinstance(params, dict):
        return _error("invalid_request", "params must be an object")
    if method == "call_llm":
        return answer_llm(params, context, env, on_chunk if params.get("stream") is True else None)
    if method == "http":
        if http is None:
            return _error("forbidden", "hub.http is off (locally: --allow-host)")
        return http.call(params)[0]
    if method == "call_agent":
        return _error("not_available_locally",
                      f"call_agent({params.get('agent_id')!r}) is not available locally: other agents run only on the hub")
    return _error("invalid_request", f"unknown method {method!r}")


# --- the run -------------------------------------------------------------------------------


class _Printer:
    """Everything the runner shows, one lock so lines from the reader threads never interleave."""

    def __init__(self, out: IO[str], err: IO[str]) -> None:
        self.out = out
        self.err = err
        self.lock = threading.Lock()

    def say(self, tag: str, text: str, *, stream: IO[str] | None = None) -> None:
        lines = text.split("\n") or [""]
        body = lines[0] + "".join("\n" + " " * (len(tag) + 1) + line for line in lines[1:])
        with self.lock:
            target = stream or self.out
            target.write(f"{tag} {body}\n")
            target.flush()

    def raw(self, text: str, *, stream: IO[str] | None = None) -> None:
        with self.lock:
            target = stream or self.out
            target.write(text)
            target.flush()


def run_agent(
    agent: Path,
    *,
    prompt: str,
    env_vars: Mapping[str, str] | None = None,
    user_vars: Mapping[str, str] | None = None,
    history: Sequence[Mapping[str, Any]] = (),
    python: str | None = None,
    timeout_s: float | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    llm_env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    http: LocalHttpSettings | None = None,
) -> RunReport:
    """Run the agent at ``agent`` (a folder or a single .py file) once; returns what it did.

    ``llm_env`` (default ``os.environ``) is where ``GEMINI_API_KEY`` / ``GEMINI_BASE_URL`` (``OPENAI_API_KEY`` /
    ``OPENAI_BASE_URL``) are read. The agent's process does not see them, just as the sandbox does not.
    ``secrets`` (``SECRET_*``, like any ``SECRET_*`` of ``env_vars``) are withheld from the agent and used by its
    ``hub.http`` calls, which follow ``http`` (default: off, as on a hub without ``HUB_HTTP_ALLOW_HOSTS``).
    """
    printer = _Printer(out or sys.stdout, err or sys.stderr)
    llm_env = os.environ if llm_env is None else llm_env
    env_vars, withheld = withhold(env_vars or {})
    for name in secrets or {}:
        if not is_secret_name(name):
            raise LocalRunError(f"a secret's name must start with SECRET_, got {name!r}")
    local_http = LocalHttp(http or LocalHttpSettings(), env_vars=env_vars, secrets={**withheld, **(secrets or {})})
    folder, names = agent_files(agent)
    entry = choose_entrypoint(names)
    for reserved in RESERVED:
        if reserved in names:
            raise LocalRunError(f"agent file {reserved!r} would shadow the hub's own file of that name; rename it")
    nonce = token_hex(8)
    context = build_context(prompt=prompt, env_vars=env_vars, user_vars=user_vars or {}, history=history,
                            agent_name=folder.name, nonce=nonce)
    report = RunReport(exit_code=0, user_vars=dict(user_vars or {}))
    with tempfile.TemporaryDirectory(prefix="hub-run-") as box:
        for name in names:
            target = Path(box, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, target)
        Path(box, HUB_NAME).write_text(hub_source(), encoding="utf-8")
        Path(box, CONTEXT_NAME).write_text(context_text(context), encoding="utf-8")
        Path(box, LAUNCHER_NAME).write_text(launcher_source(entry), encoding="utf-8")
        # The sandbox has none of the operator's secrets: keep the LLM keys (and any SECRET_*) out of the agent's process.
        child_env = {k: v for k, v in os.environ.items()
                     if not k.startswith(("GEMINI_", "HUB_LLM_", "OPENAI_")) and not is_secret_name(k)}
        child_env.setdefault("PYTHONIOENCODING", "utf-8")
        printer.say("hub:", f"running {entry} in {folder} (prompt: {len(prompt)} characters)", stream=printer.err)
        proc = subprocess.Popen(
            [python or sys.executable, LAUNCHER_NAME], cwd=box, env=child_env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace", bufsize=1,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdin_lock = threading.Lock()
        calls: list[threading.Thread] = []

        def reply(call_id: int, body: dict[str, Any]) -> None:
            line = json.dumps({"id": call_id, **body}, ensure_ascii=True, separators=(",", ":")) + "\n"
            with stdin_lock:
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(line)
                    proc.stdin.flush()
                except (BrokenPipeError, OSError, ValueError):
                    pass  # the agent already exited

        def do_call(call_id: int, method: Any, params: Any) -> None:
            if method == "http" and isinstance(params, dict):
                body, line = local_http.call(params)
                if line is not None:
                    report.http.append(line)
                    printer.say("[http]", line)
                reply(call_id, body)
                return
            body = answer_call(method, params, context, llm_env,
                               on_chunk=lambda text: reply(call_id, {"ok": True, "chunk": text}))
            if not body["ok"]:
                printer.say("[call error]", f"{method}: {body['error']['kind']}: {body['error']['message']}", stream=printer.err)
            else:
                # A streamed answer is being printed on stdout as a message, chunk by chunk: say this on stderr.
                streaming = isinstance(params, dict) and params.get("stream") is True
                printer.say("[call]", f"{method} answered ({len(json.dumps(body['result']))} characters)",
                            stream=printer.err if streaming else None)
            reply(call_id, body)

        def pump_stderr() -> None:
            assert proc.stderr is not None
            for chunk in iter(proc.stderr.readline, ""):
                printer.raw(chunk, stream=printer.err)

        stderr_thread = threading.Thread(target=pump_stderr, daemon=True)
        stderr_thread.start()
        prefix = MARKER + nonce + ":"
        streamed: list[str] | None = None  # the streaming message being printed, chunk by chunk
        timer = threading.Timer(timeout_s, proc.kill) if timeout_s else None
        if timer:
            timer.start()
        try:
            for line in iter(proc.stdout.readline, ""):
                if not line.startswith(prefix):
                    printer.raw(line if line.endswith("\n") else line + "\n")
                    continue
                try:
                    event = json.loads(line[len(prefix):])
                except ValueError:
                    printer.say("[protocol error]", "a hub line that is not JSON", stream=printer.err)
                    continue
                kind = event.get("type") if isinstance(event, dict) else None
                if kind == "delta":
                    if streamed is None:
                        streamed = []
                        printer.raw("[message] ")
                    text = str(event.get("text") or "")
                    streamed.append(text)
                    printer.raw(text)
                    if event.get("final"):
                        printer.raw("\n")
                        report.messages.append("".join(streamed))
                        streamed = None
                elif kind == "message":
                    report.messages.append(str(event.get("content")))
                    printer.say("[message]", str(event.get("content")))
                elif kind == "progress":
                    report.progress.append((float(event.get("percent") or 0), event.get("message")))
                    note = f" {event['message']}" if event.get("message") else ""
                    printer.say("[progress]", f"{event.get('percent'):g}%{note}")
                elif kind == "user_var":
                    report.user_vars[str(event.get("key"))] = str(event.get("value"))
                    printer.say("[user var]", f"{event.get('key')} = {event.get('value')}")
                elif kind == "log":
                    report.logs.append((str(event.get("level")), str(event.get("message"))))
                    printer.say(f"[log {event.get('level')}]", str(event.get("message")))
                elif kind == "call" and isinstance(event.get("id"), int):
                    t = threading.Thread(target=do_call, args=(event["id"], event.get("method"), event.get("params")),
                                         daemon=True)
                    t.start()
                    calls.append(t)
                else:
                    printer.say("[protocol error]", f"unknown hub line type {kind!r}", stream=printer.err)
            report.exit_code = proc.wait()
            if streamed is not None:  # the agent ended mid-stream: what came is its message, as on the hub
                printer.raw("\n")
                printer.say("[message cut]", "the agent ended before finishing its streamed message", stream=printer.err)
                report.messages.append("".join(streamed))
        finally:
            if timer:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for t in calls:
                t.join(timeout=1)
            stderr_thread.join(timeout=5)
            with stdin_lock, contextlib.suppress(OSError):
                proc.stdin.close()
    code = report.exit_code
    status = f"agent exited with status {code}" if code >= 0 else f"agent killed by signal {-code}"
    printer.say("hub:", status, stream=printer.err)
    printer.say("hub:", "user vars at the end: " + json.dumps(report.user_vars, ensure_ascii=False, sort_keys=True),
                stream=printer.err)
    return report


def _pairs(items: Sequence[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LocalRunError(f"{option} expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def http_settings(allow_hosts: Sequence[str], *, allow_private: bool = False) -> LocalHttpSettings:
    """``--allow-host`` patterns (repeatable, or comma-separated) as the hub's allow-list; none: hub.http is off."""
    try:
        patterns = HostPatterns.parse(",".join(allow_hosts), "--allow-host")
    except HostPatternError as exc:
        raise LocalRunError(str(exc)) from None
    return LocalHttpSettings(allow_hosts=patterns, allow_private=allow_private)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hub run AGENT --prompt TEXT [--env K=V] [--user-var K=V] [--history FILE] [--secret SECRET_K=V]
    [--allow-host PATTERN] [--allow-private]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hub", description="Tools for hub agent authors.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an agent locally, as the hub's sandbox would")
    run.add_argument("agent", type=Path, help="the agent's folder (or its single .py file)")
    run.add_argument("--prompt", required=True, help="the user's prompt")
    run.add_argument("--env", action="append", default=[], metavar="K=V", help="an agent env var (repeatable)")
    run.add_argument("--user-var", action="append", default=[], metavar="K=V", help="a session user variable (repeatable)")
    run.add_argument("--history", type=Path, help="JSON list of earlier messages [{role, content, timestamp}]")
    run.add_argument("--timeout", type=float, default=None, help="kill the agent after this many seconds")
    run.add_argument("--secret", action="append", default=[], metavar="SECRET_K=V",
                     help="a secret env var: withheld from the agent, put in where hub.http's request says {{SECRET_K}}")
    run.add_argument("--allow-host", action="append", default=[], metavar="PATTERN",
                     help="a host hub.http may reach, as the hub's HUB_HTTP_ALLOW_HOSTS (repeatable; none: hub.http is "
                          "off); the agent's own HUB_HTTP_ALLOW comes from --env")
    run.add_argument("--allow-private", action="store_true",
                     help="let hub.http reach loopback and private addresses (a local test server), as "
                          "HUB_HTTP_ALLOW_PRIVATE=1; link-local and cloud metadata stay refused")
    args = parser.parse_args(argv)
    try:
        report = run_agent(
            args.agent,
            prompt=args.prompt,
            env_vars=_pairs(args.env, "--env"),
            user_vars=_pairs(args.user_var, "--user-var"),
            history=load_history(args.history) if args.history else (),
            timeout_s=args.timeout,
            secrets=_pairs(args.secret, "--secret"),
            http=http_settings(args.allow_host, allow_private=args.allow_private),
        )
    except BoxError as exc:  # LocalRunError included
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    code = report.exit_code
    return code if code >= 0 else 128 - code
