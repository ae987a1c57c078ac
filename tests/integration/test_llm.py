"""dispatcher.llm against the fakegemini stand-in over real HTTP, through the real google-genai SDK."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher import llm
from dispatcher.config import DispatcherConfig
from dispatcher.gemini import GeminiClient
from dispatcher.llm import LLMErrorKind
from tests.fakegemini_proc import FakeGemini

KEY = "AIzaFAKE-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    fake = FakeGemini(KEY).start()
    yield fake
    fake.close()


def config(gemini: FakeGemini, **env: str) -> DispatcherConfig:
    base = {"PISTON_URL": "http://127.0.0.1:9", "DATABASE_URL": "postgresql://u@127.0.0.1/db", "GEMINI_API_KEY": KEY,
            "GEMINI_BASE_URL": gemini.url, "HUB_LLM_RETRY_BASE_S": "0.01", "HUB_LLM_RETRY_MAX_S": "0.05"}
    return DispatcherConfig.from_env({**base, **env})


def request(prompt: str, **params: Any) -> llm.LLMRequest:
    history = params.pop("chat_history", [])
    return llm.parse_request({"prompt": prompt, **params}, chat_history=history, default_model="gemini-2.5-flash",
                             max_prompt_chars=10_000)


def tagged(text: str) -> str:
    return f"{text} {uuid.uuid4()}"


def fail(client: GeminiClient, req: llm.LLMRequest, deadline_s: float = 10.0) -> llm.LLMFailure:
    with pytest.raises(llm.LLMFailure) as info:
        client.generate(req, deadline=time.monotonic() + deadline_s)
    return info.value


def test_an_answer_carries_the_stand_ins_text_model_and_token_counts(gemini: FakeGemini) -> None:
    prompt = tagged("hello")
    answer, tries = GeminiClient(config(gemini)).generate(request(prompt), deadline=time.monotonic() + 10)
    [seen] = gemini.requests(containing=prompt)
    assert tries == 1 and answer.text.startswith("[canned]") and answer.finish_reason == "STOP"
    assert answer.model == "gemini-2.5-flash" and seen["model"] == "gemini-2.5-flash"
    usage = seen["usage"]
    assert (answer.usage.prompt_tokens, answer.usage.output_tokens, answer.usage.total_tokens) == (
        usage["promptTokenCount"], usage["candidatesTokenCount"], usage["totalTokenCount"])


def test_the_sdk_sends_the_key_in_its_header_and_the_model_parameter_is_honoured(gemini: FakeGemini) -> None:
    prompt = tagged("which model")
    GeminiClient(config(gemini)).generate(request(prompt, model="gemini-2.5-pro"), deadline=time.monotonic() + 10)
    [seen] = gemini.requests(containing=prompt)
    assert seen["key_ok"] and seen["model"] == "gemini-2.5-pro" and seen["api_version"].startswith("v1")


@pytest.mark.parametrize(
    ("marker", "kind", "requests_seen"),
    [
        ("[fake:error=429]", LLMErrorKind.RATE_LIMITED, 3),
        ("[fake:error=500]", LLMErrorKind.UNAVAILABLE, 3),
        ("[fake:error=503]", LLMErrorKind.UNAVAILABLE, 3),
        ("[fake:error=408]", LLMErrorKind.UNAVAILABLE, 3),
        ("[fake:error=400]", LLMErrorKind.BAD_REQUEST, 1),
        ("[fake:error=401]", LLMErrorKind.AUTH, 1),
        ("[fake:error=403]", LLMErrorKind.AUTH, 1),
        ("[fake:error=404]", LLMErrorKind.BAD_REQUEST, 1),
        ("[fake:block]", LLMErrorKind.BLOCKED, 1),
        ("[fake:block=PROHIBITED_CONTENT]", LLMErrorKind.BLOCKED, 1),
        ("[fake:safety]", LLMErrorKind.BLOCKED, 1),
        ("[fake:max_tokens]", LLMErrorKind.MAX_TOKENS, 1),
    ],
)
def test_each_failure_maps_to_its_kind_and_only_transient_ones_are_retried(
    gemini: FakeGemini, marker: str, kind: LLMErrorKind, requests_seen: int
) -> None:
    prompt = tagged(f"q {marker}")
    failure = fail(GeminiClient(config(gemini, HUB_LLM_RETRY_ATTEMPTS="3")), request(prompt))
    assert failure.kind is kind
    assert failure.tries == requests_seen == len(gemini.requests(containing=prompt))


def test_a_wrong_key_is_kind_auth_from_gemini_s_api_key_invalid_body_and_is_tried_once(gemini: FakeGemini) -> None:
    prompt = tagged("bad key")
    failure = fail(GeminiClient(config(gemini, GEMINI_API_KEY="AIzaWRONG-123456")), request(prompt))
    [seen] = gemini.requests(containing=prompt)
    assert failure.kind is LLMErrorKind.AUTH and "API key not valid" in failure.message
    assert seen["status"] == 400 and seen["key_present"] and not seen["key_ok"]


def test_a_blocked_prompt_still_reports_the_prompt_tokens_it_used(gemini: FakeGemini) -> None:
    prompt = tagged("[fake:block]")
    failure = fail(GeminiClient(config(gemini)), request(prompt))
    [seen] = gemini.requests(containing=prompt)
    assert failure.usage is not None and failure.usage.prompt_tokens == seen["usage"]["promptTokenCount"] > 0


def test_transient_errors_then_success_returns_the_answer_with_the_number_of_tries(gemini: FakeGemini) -> None:
    prompt = tagged("[fake:error=503 times=2]")
    answer, tries = GeminiClient(config(gemini)).generate(request(prompt), deadline=time.monotonic() + 10)
    assert tries == 3 and answer.text.startswith("[canned]")
    assert [r["status"] for r in gemini.requests(containing=prompt)] == [503, 503, 200]


def test_the_sdk_itself_never_retries(gemini: FakeGemini) -> None:
    prompt = tagged("[fake:error=503]")
    failure = fail(GeminiClient(config(gemini, HUB_LLM_RETRY_ATTEMPTS="1")), request(prompt))
    assert failure.tries == 1 and len(gemini.requests(containing=prompt)) == 1


def test_a_slow_answer_times_out_as_unavailable_and_retries_stop_at_the_runs_deadline(gemini: FakeGemini) -> None:
    prompt = tagged("[fake:slow=3]")
    client = GeminiClient(config(gemini, HUB_LLM_TIMEOUT_S="0.6", HUB_LLM_RETRY_ATTEMPTS="10"))
    failure = fail(client, request(prompt), deadline_s=2.0)
    assert failure.kind is LLMErrorKind.UNAVAILABLE and "did not answer" in failure.message
    # 10 tries allowed, but each takes 0.6 s and no try starts with under 0.5 s of the 2 s left.
    assert 1 <= failure.tries <= 3


def test_no_try_is_made_when_the_run_has_no_time_left(gemini: FakeGemini) -> None:
    prompt = tagged("late")
    failure = fail(GeminiClient(config(gemini)), request(prompt), deadline_s=0.1)
    assert failure.kind is LLMErrorKind.UNAVAILABLE and gemini.requests(containing=prompt) == []


def test_without_a_key_the_call_is_not_configured_and_nothing_is_sent(gemini: FakeGemini) -> None:
    prompt = tagged("no key")
    failure = fail(GeminiClient(config(gemini, GEMINI_API_KEY="")), request(prompt))
    assert failure.kind is LLMErrorKind.NOT_CONFIGURED and gemini.requests(containing=prompt) == []


def test_history_system_and_settings_reach_gemini_in_its_request_format(gemini: FakeGemini) -> None:
    prompt = tagged("and now?")
    history = [{"role": "user", "content": "hi"}, {"role": "agent", "content": "hello!"},
               {"role": "system", "content": "house rules"}, {"role": "user", "content": "and now?"}]
    req = request(prompt, history=True, chat_history=history, system="Be brief.", temperature=0.3, max_output_tokens=7)
    answer, _ = GeminiClient(config(gemini)).generate(req, deadline=time.monotonic() + 10)
    [seen] = gemini.requests(containing=prompt)
    body = seen["body"]
    assert [(c["role"], c["parts"][0]["text"]) for c in body["contents"]] == [
        ("user", "hi"), ("model", "hello!"), ("user", "and now?"), ("user", prompt)]
    assert body["systemInstruction"]["parts"][0]["text"] == "house rules\n\nBe brief."
    assert body["generationConfig"] == {"temperature": 0.3, "maxOutputTokens": 7}
    # The stand-in cut the answer at 7 tokens; text before the cut is still an answer.
    assert answer.finish_reason == "MAX_TOKENS" and answer.usage.output_tokens <= 7 and answer.text
