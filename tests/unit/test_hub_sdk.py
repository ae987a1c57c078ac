"""The hub module as agents meet it: launcher + rendered hub.py + agent files, run in a real python3 process.

The box is laid out exactly as Piston would lay it out from build_files(); stdout is decoded with the
dispatcher's StreamDecoder and call replies are written to the process's stdin, as the dispatcher does.
"""

from __future__ import annotations

import base64
import codecs
import importlib.util
import io
import json
import os
import re
import selectors
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dispatcher.bundle import HUB_SOURCE_PATH, LAUNCHER_NAME, AgentSource, build_files
from dispatcher.llm import LLMErrorKind
from dispatcher.protocol import Call, CallMethod, Event, Log, LogLevel, Message, Progress, SetUserVar, StreamDecoder, encode_reply

NONCE = "f00dcafe"
HISTORY = [
    {"role": "user", "content": "earlier", "timestamp": "2024-05-01T10:00:00.000Z"},
    {"role": "agent", "content": "reply", "timestamp": "2024-05-01T10:00:01.000Z"},
    {"role": "user", "content": "now é", "timestamp": "2024-05-01T10:00:02.000Z"},
]


def context(transport: str = "ws") -> dict[str, Any]:
    return {
        "version": 1,
        "nonce": NONCE,
        "transport": transport,
        "agent": {"id": "agent-1", "name": "Echo", "version": "0.1"},
        "job_id": "job-1",
        "session_id": "sess-1",
        "user_id": "user-1",
        "prompt": "now é",
        "env_vars": {"API_KEY": "k3y"},
        "user_vars": {"lang": "fr"},
        "chat_history": HISTORY,
        "history_cut": 0,
    }


@dataclass
class Run:
    events: list[Event]
    output: str
    stderr: str
    code: int


Replier = Callable[[Call], str | None]


def run_agent(tmp_path: Path, files: dict[str, str], *, transport: str = "ws", reply: Replier | None = None) -> Run:
    sources = [AgentSource(name, textwrap.dedent(text)) for name, text in files.items()]
    built = build_files(context(transport), sources)
    for f in built.files:
        path = tmp_path / f["name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        data = base64.b64decode(f["content"]) if f.get("encoding") == "base64" else f["content"].encode()
        path.write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}  # block-buffered stdout, as in Piston
    stderr_path = tmp_path.parent / f"{tmp_path.name}.stderr"
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, LAUNCHER_NAME], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        dec = StreamDecoder(NONCE, max_line_chars=2_000_000, max_output_chars=100_000, max_message_chars=500_000)
        utf8 = codecs.getincrementaldecoder("utf-8")()
        events: list[Event] = []
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 20
        while True:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                proc.kill()
                pytest.fail("agent process hung")
            data = os.read(proc.stdout.fileno(), 65536)
            new = dec.feed(utf8.decode(data, final=not data))
            if not data:
                events.extend(new + dec.close())
                break
            events.extend(new)
            for event in new:
                if isinstance(event, Call) and reply is not None:
                    answer = reply(event)
                    if answer is not None:
                        proc.stdin.write(answer.encode())
                        proc.stdin.flush()
        code = proc.wait(timeout=10)
        proc.stdin.close()
    return Run(events=events, output=dec.output, stderr=stderr_path.read_text(), code=code)


def messages(run: Run) -> list[str]:
    return [e.content for e in run.events if isinstance(e, Message)]


def test_every_hub_function_emits_its_line_in_order(tmp_path: Path) -> None:
    agent = """\
        import json
        import hub

        hub.send_message("hello")
        hub.send_message({"n": 1, "s": "é"})
        hub.set_progress(10, "starting")
        hub.set_progress(55.5)
        hub.set_user_var("color", "blue")
        hub.set_user_var("count", 3)
        hub.log("a note", level="debug")
        hub.log("plain")
        answer = hub.call_llm("2+2?", system="be brief", history=True, temperature=0.2, max_output_tokens=5)
        result = hub.call_agent("other-agent", {"x": [1, 2]})
        hub.send_message(json.dumps({
            "answer": answer, "result": result, "env": hub.get_env_vars(), "user_vars": hub.get_user_vars(),
            "history": hub.get_chat_history(), "prompt": hub.get_prompt(), "agent": hub.get_agent(),
            "job": hub.get_job_id(), "session": hub.get_session_id(),
        }))
    """

    def reply(call: Call) -> str:
        if call.method == CallMethod.CALL_LLM:
            return encode_reply(call.id, True, {"text": "4"})
        return encode_reply(call.id, True, {"status": "done", "echo": call.params})

    run = run_agent(tmp_path, {"main.py": agent}, reply=reply)
    assert run.code == 0, run.stderr
    *head, last = run.events
    assert head == [
        Message("hello"),
        Message('{"n": 1, "s": "é"}'),
        Progress(10.0, "starting"),
        Progress(55.5, None),
        SetUserVar("color", "blue"),
        SetUserVar("count", "3"),
        Log(LogLevel.DEBUG, "a note"),
        Log(LogLevel.INFO, "plain"),
        Call(1, CallMethod.CALL_LLM, {
            "prompt": "2+2?", "system": "be brief", "history": True, "model": None, "temperature": 0.2, "max_output_tokens": 5,
        }),
        Call(2, CallMethod.CALL_AGENT, {"agent_id": "other-agent", "input": {"x": [1, 2]}}),
    ]
    assert isinstance(last, Message)
    seen = json.loads(last.content)
    assert seen == {
        "answer": "4",
        "result": {"status": "done", "echo": {"agent_id": "other-agent", "input": {"x": [1, 2]}}},
        "env": {"API_KEY": "k3y"},
        "user_vars": {"lang": "fr", "color": "blue", "count": "3"},
        "history": HISTORY,
        "prompt": "now é",
        "agent": {"id": "agent-1", "name": "Echo", "version": "0.1"},
        "job": "job-1",
        "session": "sess-1",
    }
    assert run.output == ""


def test_partial_print_before_a_message_keeps_both_the_text_and_the_message(tmp_path: Path) -> None:
    agent = """\
        import sys
        import hub
        print("thinking", end="")
        sys.stdout.write(" still")
        hub.send_message("done")
        print("after")
        print('{"type": "message", "content": "not a message"}')
    """
    run = run_agent(tmp_path, {"main.py": agent})
    assert run.code == 0, run.stderr
    assert messages(run) == ["done"]
    assert run.output == 'thinking still\nafter\n{"type": "message", "content": "not a message"}\n'


def test_call_llm_error_reply_raises_llm_error_with_kind(tmp_path: Path) -> None:
    agent = """\
        import hub
        try:
            hub.call_llm("hi")
        except hub.LLMError as e:
            assert isinstance(e, hub.HubError)
            hub.send_message(f"{e.kind}|{e.message}")
        try:
            hub.call_agent("a", {})
        except hub.HubError as e:
            hub.send_message(f"{e.kind}|{e}")
    """

    # Error replies the dispatcher really sends (dispatcher/calls.py): an LLMErrorKind for call_llm,
    # "bad_request" for a call_agent it refuses.
    errors = {
        CallMethod.CALL_LLM: {"kind": LLMErrorKind.RATE_LIMITED.value, "message": "slow down"},
        CallMethod.CALL_AGENT: {"kind": "bad_request", "message": "input is missing"},
    }

    def reply(call: Call) -> str:
        return encode_reply(call.id, False, error=errors[call.method])

    run = run_agent(tmp_path, {"main.py": agent}, reply=reply)
    assert run.code == 0, run.stderr
    assert messages(run) == ["rate_limited|slow down", "bad_request|call_agent failed (bad_request): input is missing"]


def test_garbage_and_other_ids_on_stdin_are_ignored_while_waiting(tmp_path: Path) -> None:
    agent = """\
        import hub
        hub.send_message(hub.call_llm("hi"))
    """

    def reply(call: Call) -> str:
        return "not json\n" + '["list"]\n' + encode_reply(call.id + 100, True, {"text": "wrong"}) + encode_reply(
            call.id, True, {"text": "right"}
        )

    run = run_agent(tmp_path, {"main.py": agent}, reply=reply)
    assert messages(run) == ["right"], run.stderr


def test_concurrent_calls_from_threads_each_get_their_own_reply(tmp_path: Path) -> None:
    agent = """\
        import threading
        import hub
        results = {}
        def ask(i):
            results[i] = hub.call_llm(f"q{i}")
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for t in threads: t.start()
        for t in threads: t.join()
        hub.send_message(",".join(f"{i}={results[i]}" for i in range(6)))
    """
    waiting: list[Call] = []

    def reply(call: Call) -> str | None:
        waiting.append(call)
        if len(waiting) < 6:
            return None
        # Answer all at once, newest first, so most replies reach a thread that is not their caller.
        return "".join(encode_reply(c.id, True, {"text": "a" + c.params["prompt"][1:]}) for c in reversed(waiting))

    run = run_agent(tmp_path, {"main.py": agent}, reply=reply)
    assert run.code == 0, run.stderr
    assert messages(run) == [",".join(f"{i}=a{i}" for i in range(6))]


def test_threads_printing_and_sending_never_corrupt_protocol_lines(tmp_path: Path) -> None:
    agent = """\
        import threading
        import hub
        def work(t):
            for i in range(50):
                print(f"t{t}-{i}", end="")
                hub.send_message(f"m{t}-{i}-" + "é" * 50)
        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
    """
    run = run_agent(tmp_path, {"main.py": agent})
    assert run.code == 0, run.stderr
    assert [e for e in run.events if not isinstance(e, Message)] == []
    assert sorted(messages(run)) == sorted(f"m{t}-{i}-" + "é" * 50 for t in range(8) for i in range(50))
    # Two threads' partial prints may legitimately run together ("t2-22t3-0"): split on the tokens themselves.
    assert sorted(re.findall(r"t\d+-\d+", run.output)) == sorted(f"t{t}-{i}" for t in range(8) for i in range(50))
    assert re.sub(r"t\d+-\d+", "", run.output).strip() == ""


def test_execute_transport_call_llm_raises_hub_error_without_writing(tmp_path: Path) -> None:
    agent = """\
        import sys
        import hub
        for fn, args in ((hub.call_llm, ("hi",)), (hub.call_agent, ("a", {}))):
            try:
                fn(*args)
            except hub.HubError as e:
                print(type(e).__name__, e, file=sys.stderr)
    """
    run = run_agent(tmp_path, {"main.py": agent}, transport="execute")
    assert run.code == 0, run.stderr
    assert run.events == []
    assert run.output == ""
    expected = "call_llm requires the WebSocket transport (PISTON_TRANSPORT=ws); this run uses the batch /execute transport"
    assert f"HubError {expected}" in run.stderr
    assert "HubError call_agent requires the WebSocket transport" in run.stderr


def test_agent_exception_gives_its_own_traceback_and_nonzero_exit(tmp_path: Path) -> None:
    agent = """\
        import hub
        hub.send_message("before")
        print("partial", end="")

        def explode():
            raise ValueError("boom")

        explode()
    """
    run = run_agent(tmp_path, {"main.py": agent})
    assert run.code == 1
    assert messages(run) == ["before"]
    assert run.output == "partial"
    assert 'File "main.py", line 8, in <module>' in run.stderr
    assert 'File "main.py", line 6, in explode' in run.stderr
    assert run.stderr.rstrip().endswith("ValueError: boom")
    assert "runpy" not in run.stderr and LAUNCHER_NAME not in run.stderr


def test_syntax_error_in_agent_names_the_file_and_line(tmp_path: Path) -> None:
    run = run_agent(tmp_path, {"main.py": "x = 1\ndef (:\n"})
    assert run.code == 1
    assert 'File "main.py", line 2' in run.stderr
    assert "SyntaxError" in run.stderr


def test_sys_exit_code_propagates(tmp_path: Path) -> None:
    run = run_agent(tmp_path, {"main.py": "import sys, hub\nhub.send_message('bye')\nsys.exit(3)\n"})
    assert run.code == 3
    assert messages(run) == ["bye"]
    assert run.stderr == ""


def test_main_guard_block_runs_with_argv_of_the_entrypoint(tmp_path: Path) -> None:
    agent = """\
        import sys
        import hub
        def main():
            hub.send_message(f"main ran as {__name__} argv={sys.argv} file={__file__}")
        if __name__ == "__main__":
            main()
    """
    run = run_agent(tmp_path, {"agent.py": agent})
    assert messages(run) == ["main ran as __main__ argv=['agent.py'] file=agent.py"], run.stderr


def test_sibling_modules_and_packages_import(tmp_path: Path) -> None:
    files = {
        "main.py": "import hub\nimport helpers\nfrom pkg.tools import shout\nhub.send_message(shout(helpers.greet()))\n",
        "helpers.py": "def greet():\n    return 'hi'\n",
        "pkg/__init__.py": "",
        "pkg/tools.py": "def shout(s):\n    return s.upper()\n",
        "pkg/hub.py": "NOT_OURS = True\n",
    }
    run = run_agent(tmp_path, files)
    assert messages(run) == ["HI"], run.stderr


def test_single_nested_entrypoint_runs_with_its_folder_on_sys_path(tmp_path: Path) -> None:
    files = {"src/bot.py": "import sys, os, hub\nhub.send_message(os.path.basename(sys.path[0]))\n", "src/data.txt": "x"}
    run = run_agent(tmp_path, files)
    assert messages(run) == ["src"], run.stderr


def test_large_message_arrives_whole(tmp_path: Path) -> None:
    # Over Python's pipe buffer and Piston's chunk size; non-ASCII travels \u-escaped (6 characters each).
    run = run_agent(tmp_path, {"main.py": "import hub\nhub.send_message('日本' * 100_000)\n"})
    assert messages(run) == ["日本" * 100_000], run.stderr


# --- hub.py imported outside the sandbox ----------------------------------------------------


def load_hub() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hub_under_test", HUB_SOURCE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hub_imports_outside_the_sandbox_with_an_empty_context() -> None:
    hub = load_hub()
    assert hub.get_env_vars() == {}
    assert hub.get_chat_history() == []
    assert hub.get_session_id() is None
    with pytest.raises(hub.HubError, match="WebSocket transport"):
        hub.call_llm("hi")
    with pytest.raises(hub.HubError, match=r"_hub_context\.json"):  # the run's context, shipped beside hub.py
        hub._bootstrap()


def test_init_sets_context_and_getters_return_copies() -> None:
    hub = load_hub()
    out = io.StringIO()
    hub._init(context(), stdout=out)
    hub.get_env_vars()["API_KEY"] = "changed"
    hub.get_chat_history()[0]["content"] = "changed"
    assert hub.get_env_vars() == {"API_KEY": "k3y"}
    assert hub.get_chat_history() == HISTORY
    hub.set_user_var("k", "v")
    assert hub.get_user_vars() == {"lang": "fr", "k": "v"}
    dec = StreamDecoder(NONCE, max_line_chars=10_000, max_output_chars=1000, max_message_chars=1000)
    assert dec.feed(out.getvalue()) == [SetUserVar("k", "v")]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda hub: hub.set_progress(101), ValueError),
        (lambda hub: hub.set_progress(-1), ValueError),
        (lambda hub: hub.set_progress(float("nan")), ValueError),
        (lambda hub: hub.set_progress("50"), ValueError),
        (lambda hub: hub.set_progress(True), ValueError),
        (lambda hub: hub.set_user_var("", "v"), ValueError),
        (lambda hub: hub.log("m", level="loud"), ValueError),
        (lambda hub: hub.call_llm(123), TypeError),
        (lambda hub: hub.call_agent("a", {"x": object()}), TypeError),
        (lambda hub: hub.call_agent("a", {"x": float("inf")}), TypeError),
        (lambda hub: hub.call_llm("hi", temperature=float("nan")), ValueError),
    ],
)
def test_invalid_arguments_raise_before_anything_is_written(call: Callable[[ModuleType], None], error: type[Exception]) -> None:
    hub = load_hub()
    out = io.StringIO()
    hub._init(context(), stdout=out)
    with pytest.raises(error):
        call(hub)
    assert out.getvalue() == ""


def test_context_limits_make_oversized_lines_fail_in_the_agent_not_on_the_wire() -> None:
    hub = load_hub()
    out = io.StringIO()
    hub._init({**context(), "limits": {"max_line_chars": 200, "max_message_chars": 50}}, stdout=out)
    with pytest.raises(hub.HubError, match="content has 51 characters, over the hub's limit of 50"):
        hub.send_message("x" * 51)
    with pytest.raises(hub.HubError, match="over the hub's limit of 200"):
        hub.send_message("é" * 40)  # 40 characters, but 240 once \\u-escaped
    with pytest.raises(hub.HubError, match="over the hub's limit of 200"):
        hub.call_llm("p" * 300)
    assert out.getvalue() == ""
    hub.send_message("x" * 50)
    dec = StreamDecoder(NONCE, max_line_chars=200, max_output_chars=1000, max_message_chars=50)
    assert dec.feed(out.getvalue()) == [Message("x" * 50)]


# ---- hub.http (issue 15) ----------------------------------------------------------------------------


def test_http_sends_one_call_and_returns_a_response_with_case_insensitive_headers_and_json(tmp_path: Path) -> None:
    agent = """\
        import hub
        r = hub.http("POST", "https://api.example.com/v1/items?x=1", headers={"Authorization": "Bearer {{SECRET_T}}"},
                     params={"q": "a b", "n": [1, 2]}, json={"title": "t"}, timeout=5)
        hub.send_message(f"{r.status} {r.reason} {r.ok} {r.headers['content-type']} {r.headers.get('X-MISSING')}")
        hub.send_message(f"{r.json()['id']} {r.text} {r.url} {r.size} {r.redirects} {'CONTENT-TYPE' in r.headers}")
    """
    seen: list[Call] = []

    def reply(call: Call) -> str:
        seen.append(call)
        return encode_reply(call.id, True, {"status": 201, "reason": "Created", "headers": {"Content-Type": "application/json"},
                                            "text": '{"id": 7}', "url": "https://api.example.com/v1/items?x=1",
                                            "elapsed_ms": 12, "size": 9, "redirects": 0})

    run = run_agent(tmp_path, {"main.py": agent}, reply=reply)
    assert run.code == 0, run.stderr
    [call] = seen
    assert call.method is CallMethod.HTTP
    assert call.params == {"method": "POST", "url": "https://api.example.com/v1/items?x=1",
                           "headers": {"Authorization": "Bearer {{SECRET_T}}"}, "params": {"q": "a b", "n": [1, 2]},
                           "json": {"title": "t"}, "data": None, "timeout": 5.0}
    assert messages(run) == ["201 Created True application/json None",
                             '7 {"id": 7} https://api.example.com/v1/items?x=1 9 0 True']


@pytest.mark.parametrize("kind", ["forbidden", "timeout", "too_large", "unavailable", "limit", "bad_request"])
def test_an_http_error_reply_raises_http_error_with_its_kind(tmp_path: Path, kind: str) -> None:
    agent = """\
        import hub
        try:
            hub.http("GET", "https://api.example.com/")
        except hub.HttpError as e:
            assert isinstance(e, hub.HubError)
            hub.send_message(f"{e.kind}|{e.message}|{e}")
    """

    def reply(call: Call) -> str:
        return encode_reply(call.id, False, error={"kind": kind, "message": "why"})

    run = run_agent(tmp_path, {"main.py": agent}, reply=reply)
    assert run.code == 0, run.stderr
    assert messages(run) == [f"{kind}|why|{kind}: why"]


@pytest.mark.parametrize(("arguments", "says"), [
    ({"json": {"x": object()}}, "json is not JSON-serialisable"),
    ({"json": float("nan")}, "json is not JSON-serialisable"),
    ({"headers": {"X": object()}}, "headers is not JSON-serialisable"),
    ({"data": {"a": {1, 2}}}, "data is not JSON-serialisable"),
    ({"timeout": "5"}, "timeout must be a number"),
])
def test_http_arguments_that_cannot_be_sent_are_bad_request_before_anything_is_written(
    arguments: dict[str, Any], says: str
) -> None:
    hub = load_hub()
    out = io.StringIO()
    hub._init(context(), stdout=out)
    with pytest.raises(hub.HttpError, match=says) as info:
        hub.http("POST", "https://api.example.com/", **arguments)
    assert info.value.kind == "bad_request"
    assert out.getvalue() == ""


def test_http_on_the_batch_transport_raises_hub_error_without_writing() -> None:
    hub = load_hub()
    out = io.StringIO()
    hub._init(context("execute"), stdout=out)
    with pytest.raises(hub.HubError, match="http requires the WebSocket transport"):
        hub.http("GET", "https://api.example.com/")
    assert out.getvalue() == ""
