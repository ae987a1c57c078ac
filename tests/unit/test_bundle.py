"""Building Piston's files list: entrypoint choice, name checks, hub.py and the context file, history windowing."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from dispatcher import bundle
from dispatcher.bundle import (
    CONTEXT_NAME,
    HUB_SOURCE_PATH,
    LAUNCHER_NAME,
    AgentSource,
    BundleError,
    build_files,
    choose_entrypoint,
)


def make_context(history: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "version": 1,
        "nonce": "abc123",
        "transport": "ws",
        "agent": {"id": "a1", "name": "Agent", "version": "1.0"},
        "job_id": "j1",
        "session_id": "s1",
        "user_id": "u1",
        "prompt": "hi",
        "env_vars": {},
        "user_vars": {},
        "chat_history": history or [],
        "history_cut": 0,
    }
    ctx.update(extra)
    return ctx


def msg(i: int, size: int = 100, char: str = "x") -> dict[str, str]:
    return {"role": "user" if i % 2 else "agent", "content": f"{i}:" + char * size, "timestamp": "2024-01-01T00:00:00.000Z"}


def embedded_context(files: list[dict[str, str]]) -> dict[str, Any]:
    """The context as the hub in the box reads it: the JSON file beside hub.py."""
    return json.loads(next(f["content"] for f in files if f["name"] == CONTEXT_NAME))


MAIN = [AgentSource("main.py", "import hub\nhub.send_message('hi')\n")]


def test_entrypoint_prefers_main_then_agent_then_single_py_file() -> None:
    assert choose_entrypoint(["agent.py", "main.py", "x.py"]) == "main.py"
    assert choose_entrypoint(["util.py", "agent.py"]) == "agent.py"
    assert choose_entrypoint(["README.md", "src/bot.py"]) == "src/bot.py"


def test_entrypoint_ambiguity_lists_the_files_found() -> None:
    expected = "no entrypoint: expected main.py, agent.py or a single .py file; found: a.py, b.py"
    with pytest.raises(BundleError, match=re.escape(expected)):
        choose_entrypoint(["b.py", "a.py"])
    with pytest.raises(BundleError, match=re.escape("found: data.txt")):
        choose_entrypoint(["data.txt"])


def test_nested_main_py_is_not_the_top_level_main() -> None:
    with pytest.raises(BundleError):
        choose_entrypoint(["pkg/main.py", "pkg/other.py"])


def test_files_are_launcher_then_hub_then_agent_files_unchanged() -> None:
    sources = [*MAIN, AgentSource("data.bin", "AAEC", "base64"), AgentSource("lib/util.py", "X = 1\n")]
    built = build_files(make_context(), sources)
    assert [f["name"] for f in built.files] == [LAUNCHER_NAME, "hub.py", "main.py", "data.bin", "lib/util.py", CONTEXT_NAME]
    assert built.files[2] == {"name": "main.py", "content": MAIN[0].content}
    assert built.files[3] == {"name": "data.bin", "content": "AAEC", "encoding": "base64"}
    assert "encoding" not in built.files[0] and "encoding" not in built.files[1]
    assert built.entry == "main.py"
    assert 'ENTRY = "main.py"' in built.files[0]["content"]


@pytest.mark.parametrize("name", ["hub.py", "_hub_launcher.py", "_hub_context.json"])
def test_agent_file_that_would_shadow_the_hub_is_refused(name: str) -> None:
    with pytest.raises(BundleError, match="shadow"):
        build_files(make_context(), [*MAIN, AgentSource(name, "x = 1\n")])


def test_hub_py_inside_a_package_is_allowed() -> None:
    built = build_files(make_context(), [*MAIN, AgentSource("pkg/hub.py", "")])
    assert "pkg/hub.py" in [f["name"] for f in built.files]


@pytest.mark.parametrize("name", ["/etc/passwd", "../x.py", "a/../../x.py", "a//b.py", "./main2.py", "a\\b.py", ""])
def test_unsafe_file_names_are_refused(name: str) -> None:
    with pytest.raises(BundleError):
        build_files(make_context(), [*MAIN, AgentSource(name, "")])


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(BundleError, match="two agent files"):
        build_files(make_context(), [*MAIN, AgentSource("main.py", "")])


TRICKY = "quote\" apostrophe' backslash\\ newline\n tab\t nul-less é 日本 😀 \u2028 \u2029 \x7f }\"'''\"\"\" {x}"


def test_shipped_context_round_trips_tricky_text_and_hub_py_compiles() -> None:
    ctx = make_context([msg(1)], prompt=TRICKY, env_vars={TRICKY: TRICKY})
    built = build_files(ctx, MAIN)
    compile(next(f["content"] for f in built.files if f["name"] == "hub.py"), "hub.py", "exec")
    assert embedded_context(built.files) == ctx


def test_hub_py_is_the_hub_packages_own_source_byte_for_byte_whatever_the_context() -> None:
    one = build_files(make_context([msg(1)], nonce="n1", env_vars={"API_KEY": "secret-one"}), MAIN)
    two = build_files(make_context([msg(i) for i in range(50)], nonce="n2", prompt=TRICKY, transport="execute",
                                   env_vars={"API_KEY": "secret-two", "OTHER": "x"}), MAIN)
    hub_one, hub_two = (next(f["content"] for f in b.files if f["name"] == "hub.py") for b in (one, two))
    assert hub_one.encode() == hub_two.encode() == HUB_SOURCE_PATH.read_bytes()
    assert "secret-one" not in hub_one  # the context travels as data, beside it
    assert embedded_context(one.files)["env_vars"] == {"API_KEY": "secret-one"}


def test_small_history_is_embedded_whole() -> None:
    history = [msg(i) for i in range(10)]
    built = build_files(make_context(history), MAIN)
    assert (built.history_kept, built.history_cut) == (10, 0)
    assert embedded_context(built.files)["chat_history"] == history


@pytest.mark.parametrize("char", ["x", "é", "😀", "\"\\\n"])
def test_large_history_keeps_the_newest_messages_that_fit_the_body_limit(char: str) -> None:
    history = [msg(i, 300, char) for i in range(400)]
    built = build_files(make_context(history), MAIN, max_body_bytes=60_000, overhead_bytes=2048)
    size = len(json.dumps(built.files).encode())
    assert size + 2048 <= 60_000
    assert 0 < built.history_kept < 400
    assert built.history_cut == 400 - built.history_kept
    ctx = embedded_context(built.files)
    assert ctx["chat_history"] == history[-built.history_kept :]
    assert ctx["history_cut"] == built.history_cut
    # One more message would not have fitted: the window is as large as it can be.
    bigger = make_context(history[-(built.history_kept + 1) :], history_cut=built.history_cut - 1)
    too_big = bundle._files(bigger, MAIN, "main.py")
    assert len(json.dumps(too_big).encode()) + 2048 > 60_000


# A body limit with room for some history beside the hub's own file, whatever its size.
SOME_ROOM = len(HUB_SOURCE_PATH.read_bytes()) + 7_000


def test_history_cut_upstream_is_added_to() -> None:
    history = [msg(i, 1000) for i in range(100)]
    built = build_files(make_context(history, history_cut=50), MAIN, max_body_bytes=SOME_ROOM)
    assert built.history_cut == 50 + 100 - built.history_kept
    assert embedded_context(built.files)["history_cut"] == built.history_cut


def test_callers_context_is_not_changed() -> None:
    ctx = make_context([msg(i, 1000) for i in range(100)])
    before = json.dumps(ctx)
    build_files(ctx, MAIN, max_body_bytes=SOME_ROOM)
    assert json.dumps(ctx) == before


def test_bundle_too_large_without_history_names_the_sizes() -> None:
    with pytest.raises(BundleError, match=r"bytes .* over the limit of 20000 bytes"):
        build_files(make_context([msg(1)]), [*MAIN, AgentSource("big.txt", "y" * 30_000)], max_body_bytes=20_000)


def test_windowing_twenty_thousand_messages_keeps_the_newest_that_fit() -> None:
    # How long this takes is a bench figure (bench/micro.py, stage 7), not an assertion here.
    history = [msg(i, 50) for i in range(20_000)]
    built = build_files(make_context(history), MAIN, max_body_bytes=100_000)
    assert 0 < built.history_kept < 20_000
    assert embedded_context(built.files)["chat_history"] == history[-built.history_kept :]


def test_body_size_counts_exactly_the_bytes_json_dumps_gives_the_files_list_even_with_escapes_and_non_ascii() -> None:
    sources = [AgentSource("main.py", 'print("héllo \\\\ \u2028 ☃ \U0001f600")\n'),
               AgentSource("data/blob.bin", "AAEC", encoding="base64")]
    history = [{"role": "user", "content": 'q "quoted" \\ é \x00', "timestamp": "2026-01-01T00:00:00.000Z"}]
    files = build_files(make_context(history), sources).files
    for part in (files, files[:1], files[1:3], []):
        assert bundle.body_size(part) == len(json.dumps(part).encode())
    # a second build sizes the same files from the cache: same answer
    assert bundle.body_size(build_files(make_context(history), sources).files) == len(json.dumps(files).encode())
