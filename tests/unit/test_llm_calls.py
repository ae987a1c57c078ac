"""Pure parts of call_llm / call_agent: parameter checks, history mapping, reading a 200 answer, fakegemini markers."""

from __future__ import annotations

from typing import Any

import pytest
from google.genai import types

from dispatcher import children, gemini, llm
from dispatcher.llm import LLMErrorKind
from fakegemini import answers


def parse(params: dict[str, Any], history: list[dict[str, Any]] | None = None) -> llm.LLMRequest:
    return llm.parse_request(params, chat_history=history or [], default_model="gemini-2.5-flash", max_prompt_chars=100)


@pytest.mark.parametrize(
    "params",
    [{"prompt": ""}, {"prompt": 3}, {"prompt": "x" * 101}, {"prompt": "hi", "temperature": 3},
     {"prompt": "hi", "temperature": True}, {"prompt": "hi", "max_output_tokens": 0}, {"prompt": "hi", "model": "a/b"},
     {"prompt": "hi", "system": 5}],
    ids=["empty", "not-str", "too-long", "temperature-high", "temperature-bool", "max-tokens-0", "model-path", "system"],
)
def test_bad_parameters_are_bad_request_before_any_http(params: dict[str, Any]) -> None:
    with pytest.raises(llm.LLMFailure) as info:
        parse(params)
    assert info.value.kind is LLMErrorKind.BAD_REQUEST and not info.value.retryable


def test_history_maps_user_to_user_agent_to_model_and_system_into_the_system_instruction() -> None:
    history = [{"role": "system", "content": "rules"}, {"role": "user", "content": "a"}, {"role": "agent", "content": "b"},
               {"role": "user", "content": ""}]
    req = parse({"prompt": "c", "history": True, "system": "brief"}, history)
    assert [(c.role, c.parts[0].text) for c in req.contents()] == [("user", "a"), ("model", "b"), ("user", "c")]
    assert req.system == "rules\n\nbrief"
    assert [c.role for c in parse({"prompt": "c"}, history).contents()] == ["user"]  # history=False: the prompt only


def response(body: dict[str, Any]) -> types.GenerateContentResponse:
    return types.GenerateContentResponse.model_validate(body)


def test_read_answer_joins_text_parts_and_skips_thoughts() -> None:
    r = response({"candidates": [{"content": {"role": "model", "parts": [{"text": "thinking", "thought": True},
                                                                         {"text": "Hel"}, {"text": "lo"}]},
                                  "finishReason": "STOP"}],
                  "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 9}})
    answer = gemini.read_answer(r, "gemini-2.5-flash")
    assert answer.text == "Hello" and answer.usage == llm.Usage(3, 2, 9)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"promptFeedback": {"blockReason": "SAFETY"}}, LLMErrorKind.BLOCKED),
        ({"candidates": [{"finishReason": "RECITATION"}]}, LLMErrorKind.BLOCKED),
        ({"candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}]}, LLMErrorKind.MAX_TOKENS),
        ({"candidates": [{"content": {"role": "model"}, "finishReason": "OTHER"}]}, LLMErrorKind.UNAVAILABLE),
        ({}, LLMErrorKind.UNAVAILABLE),
    ],
    ids=["prompt-blocked", "recitation", "max-tokens", "other-empty", "no-candidates"],
)
def test_a_200_without_text_is_a_failure_of_the_right_kind_never_retried(body: dict[str, Any], kind: LLMErrorKind) -> None:
    with pytest.raises(llm.LLMFailure) as info:
        gemini.read_answer(response(body), "m")
    assert info.value.kind is kind and not info.value.retryable


def test_a_child_prompt_is_the_str_itself_or_json_text() -> None:
    assert children.child_prompt("plain") == "plain"
    assert children.child_prompt({"a": [1, "é"]}) == '{"a": [1, "é"]}'


def test_a_repeated_message_sequence_number_replaces_instead_of_duplicating() -> None:
    wb = children.CollectingWriteBack(None, outbox_id=1, job_id="j", session_id=None, owner="o", attempt=1)  # type: ignore[arg-type]
    assert wb.message(1, "a") and wb.message(2, "b")
    assert not wb.message(1, "a again")  # a Piston retry starts at 1 again
    assert wb.messages == ["a again", "b"]


def test_the_newest_messages_that_fit_are_returned_to_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(children, "REPLY_MAX_CHARS", 5)
    assert children._newest(["aaa", "bb", "cc", "d"]) == (["bb", "cc", "d"], 1)


def test_fakegemini_markers_and_token_counts() -> None:
    assert answers.parse_marker("x [fake:error=429 times=2] y") == answers.Script(answers.Fault.ERROR, "429", 2)
    assert answers.parse_marker("[fake:block]") == answers.Script(answers.Fault.BLOCK, None, None)
    assert answers.parse_marker("[fake:nonsense]") is None and answers.parse_marker("plain") is None
    assert answers.tokens("") == 0 and answers.tokens("abcde") == 2
    body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    # Deterministic across processes: the digest is sha256 of the request's text ("hello": 2cf24dba5fb0…).
    assert answers.success("gemini-x", body) == {
        "candidates": [{"content": {"parts": [{"text": "[canned] gemini-x answer 2cf24dba to 5 characters: hello"}],
                                    "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 2, "totalTokenCount": 16,
                          "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 2}], "candidatesTokenCount": 14},
        "modelVersion": "gemini-x",
        "responseId": "2cf24dba5fb0a30e26e83b",
    }


def test_the_gemini_key_is_not_in_the_configs_repr() -> None:
    from dispatcher.config import DispatcherConfig

    cfg = DispatcherConfig.from_env({"PISTON_URL": "http://p:1", "DATABASE_URL": "postgresql://u@h/d",
                                     "GEMINI_API_KEY": "AIzaSECRET-123", "HUB_MAX_LLM_CALLS": "3"})
    assert cfg.gemini_api_key == "AIzaSECRET-123" and cfg.max_llm_calls == 3 and cfg.max_agent_depth == 3
    assert "AIzaSECRET" not in repr(cfg) and "AIzaSECRET" not in str(cfg)
