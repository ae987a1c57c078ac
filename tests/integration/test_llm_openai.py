"""dispatcher.llm_openai against the fakeopenai stand-in over real HTTP, through the real openai SDK."""

from __future__ import annotations

import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from dispatcher import llm, llm_openai
from dispatcher.config import LLMSettings, OpenAISettings
from dispatcher.llm import LLMErrorKind
from dispatcher.llm_openai import OpenAIClient
from tests.fakeopenai_proc import FakeOpenAI

KEY = "sk-fake-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(KEY).start()
    yield server
    server.close()


def settings(fake: FakeOpenAI, **env: str) -> tuple[OpenAISettings, LLMSettings]:
    base = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.base_url, "HUB_LLM_RETRY_BASE_S": "0.01",
            "HUB_LLM_RETRY_MAX_S": "0.05"}
    return OpenAISettings.from_env({**base, **env}), LLMSettings.from_env({**base, **env})


def client(fake: FakeOpenAI, **env: str) -> OpenAIClient:
    return OpenAIClient(*settings(fake, **env))


def request(prompt: str, **params: Any) -> llm.LLMRequest:
    history = params.pop("chat_history", [])
    params.setdefault("model", "openai:gpt-4o-mini")
    return llm.parse_request({"prompt": prompt, **params}, chat_history=history, default_model="gemini-2.5-flash",
                             max_prompt_chars=10_000)


def tagged(text: str) -> str:
    return f"{text} {uuid.uuid4()}"


def fail(c: OpenAIClient, req: llm.LLMRequest, deadline_s: float = 10.0) -> llm.LLMFailure:
    with pytest.raises(llm.LLMFailure) as info:
        c.generate(req, deadline=time.monotonic() + deadline_s)
    return info.value


def test_an_answer_carries_the_stand_ins_text_model_and_token_counts(fake: FakeOpenAI) -> None:
    prompt = tagged("hello")
    answer, tries = client(fake).generate(request(prompt), deadline=time.monotonic() + 10)
    [seen] = fake.requests(containing=prompt)
    assert tries == 1 and answer.text.startswith("[canned] gpt-4o-mini answer") and answer.finish_reason == "STOP"
    assert answer.model == "openai:gpt-4o-mini" and answer.model_version == "gpt-4o-mini" == seen["model"]
    usage = seen["usage"]
    assert (answer.usage.prompt_tokens, answer.usage.output_tokens, answer.usage.total_tokens) == (
        usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) and usage["total_tokens"] > 0


def test_the_sdk_sends_the_key_as_a_bearer_token_and_the_name_without_its_prefix(fake: FakeOpenAI) -> None:
    prompt = tagged("which model")
    client(fake).generate(request(prompt, model="openai:llama3.2:3b"), deadline=time.monotonic() + 10)
    [seen] = fake.requests(containing=prompt)
    assert seen["key_ok"] and seen["model"] == "llama3.2:3b" and seen["path"] == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("marker", "kind", "requests_seen"),
    [
        ("[fake:error=429]", LLMErrorKind.RATE_LIMITED, 3),
        ("[fake:error=500]", LLMErrorKind.UNAVAILABLE, 3),
        ("[fake:error=503]", LLMErrorKind.UNAVAILABLE, 3),
        ("[fake:error=408]", LLMErrorKind.UNAVAILABLE, 3),
        ("[fake:error=409]", LLMErrorKind.UNAVAILABLE, 3),
        ("[fake:error=400]", LLMErrorKind.BAD_REQUEST, 1),
        ("[fake:error=404]", LLMErrorKind.BAD_REQUEST, 1),
        ("[fake:error=422]", LLMErrorKind.BAD_REQUEST, 1),
        ("[fake:error=401]", LLMErrorKind.AUTH, 1),
        ("[fake:error=403]", LLMErrorKind.AUTH, 1),
        ("[fake:quota]", LLMErrorKind.RATE_LIMITED, 1),  # a billing limit: not retried
        ("[fake:refusal]", LLMErrorKind.BLOCKED, 1),
        ("[fake:content_filter]", LLMErrorKind.BLOCKED, 1),
        ("[fake:max_tokens]", LLMErrorKind.MAX_TOKENS, 1),
    ],
)
def test_each_failure_maps_to_its_kind_and_only_transient_ones_are_retried(
    fake: FakeOpenAI, marker: str, kind: LLMErrorKind, requests_seen: int
) -> None:
    prompt = tagged(f"q {marker}")
    failure = fail(client(fake, HUB_LLM_RETRY_ATTEMPTS="3"), request(prompt))
    assert failure.kind is kind, failure.message
    assert failure.tries == requests_seen == len(fake.requests(containing=prompt))


def test_a_429_is_retried_and_then_answers(fake: FakeOpenAI) -> None:
    prompt = tagged("[fake:error=429 times=1]")
    retries: list[tuple[int, str]] = []
    answer, tries = client(fake).generate(request(prompt), deadline=time.monotonic() + 10,
                                          on_retry=lambda n, exc: retries.append((n, exc.kind.value)))
    assert tries == 2 and answer.text.startswith("[canned]") and retries == [(1, "rate_limited")]
    assert [r["status"] for r in fake.requests(containing=prompt)] == [429, 200]


def test_a_wrong_key_is_kind_auth_and_the_message_never_holds_the_key(fake: FakeOpenAI) -> None:
    prompt = tagged("bad key")
    wrong = "sk-wrong-" + secrets.token_hex(8)
    failure = fail(client(fake, OPENAI_API_KEY=wrong), request(prompt))
    [seen] = fake.requests(containing=prompt)
    assert failure.kind is LLMErrorKind.AUTH and failure.tries == 1 and "OPENAI_API_KEY" in failure.message
    assert "HTTP 401" in failure.message and wrong not in failure.message and KEY not in failure.message
    assert seen["key_present"] and not seen["key_ok"]


def test_an_echoed_key_is_masked_in_the_failure(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    c = client(fake)

    def leaky(*_: Any, **__: Any) -> llm.LLMAnswer:
        raise llm.LLMFailure(LLMErrorKind.BAD_REQUEST, f"endpoint said: bad key {KEY}")

    monkeypatch.setattr(c, "_once", leaky)
    failure = fail(c, request(tagged("leak")))
    assert KEY not in failure.message and "[redacted]" in failure.message


def test_a_refusal_and_a_filtered_answer_still_report_the_prompt_tokens(fake: FakeOpenAI) -> None:
    for marker in ("[fake:refusal]", "[fake:content_filter]"):
        prompt = tagged(marker)
        failure = fail(client(fake), request(prompt))
        [seen] = fake.requests(containing=prompt)
        assert failure.usage is not None and failure.usage.prompt_tokens == seen["usage"]["prompt_tokens"] > 0


def test_the_sdk_itself_never_retries(fake: FakeOpenAI) -> None:
    prompt = tagged("[fake:error=503]")
    failure = fail(client(fake, HUB_LLM_RETRY_ATTEMPTS="1"), request(prompt))
    assert failure.tries == 1 and len(fake.requests(containing=prompt)) == 1


def test_a_slow_answer_times_out_as_unavailable_and_retries_stop_at_the_runs_deadline(fake: FakeOpenAI) -> None:
    prompt = tagged("[fake:slow=3]")
    c = client(fake, HUB_LLM_TIMEOUT_S="0.6", HUB_LLM_RETRY_ATTEMPTS="10")
    failure = fail(c, request(prompt), deadline_s=2.0)
    assert failure.kind is LLMErrorKind.UNAVAILABLE and "did not answer" in failure.message
    # 10 tries allowed, but each takes 0.6 s and no try starts with under 0.5 s of the 2 s left.
    assert 1 <= failure.tries <= 3


def test_no_try_is_made_when_the_run_has_no_time_left(fake: FakeOpenAI) -> None:
    prompt = tagged("late")
    failure = fail(client(fake), request(prompt), deadline_s=0.1)
    assert failure.kind is LLMErrorKind.UNAVAILABLE and fake.requests(containing=prompt) == []


def test_without_a_key_the_call_is_not_configured_and_nothing_is_sent(fake: FakeOpenAI) -> None:
    prompt = tagged("no key")
    failure = fail(client(fake, OPENAI_API_KEY=""), request(prompt))
    assert failure.kind is LLMErrorKind.NOT_CONFIGURED and "OPENAI_API_KEY" in failure.message
    assert fake.requests(containing=prompt) == []


def test_an_unreachable_endpoint_is_unavailable(fake: FakeOpenAI) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        failure = fail(client(fake, OPENAI_BASE_URL=url, HUB_LLM_RETRY_ATTEMPTS="2"), request(tagged("nobody")))
    assert failure.kind is LLMErrorKind.UNAVAILABLE and "cannot reach" in failure.message and failure.tries == 2


def test_history_system_and_settings_reach_the_endpoint_as_chat_messages(fake: FakeOpenAI) -> None:
    prompt = tagged("and now?")
    history = [{"role": "user", "content": "hi"}, {"role": "agent", "content": "hello!"},
               {"role": "system", "content": "house rules"}, {"role": "user", "content": "and now?"}]
    req = request(prompt, history=True, chat_history=history, system="Be brief.", temperature=0.3, max_output_tokens=7)
    answer, _ = client(fake).generate(req, deadline=time.monotonic() + 10)
    [seen] = fake.requests(containing=prompt)
    body = seen["body"]
    assert body["messages"] == [
        {"role": "system", "content": "house rules\n\nBe brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello!"},
        {"role": "user", "content": "and now?"},
        {"role": "user", "content": prompt},
    ]
    assert body["temperature"] == 0.3 and body["max_completion_tokens"] == 7 and "max_tokens" not in body
    assert answer.finish_reason == "MAX_TOKENS" and len(answer.text) <= 28  # cut at 7 tokens, still returned


def test_older_servers_can_be_sent_max_tokens_instead(fake: FakeOpenAI) -> None:
    prompt = tagged("old server")
    client(fake, OPENAI_MAX_TOKENS_FIELD="max_tokens").generate(request(prompt, max_output_tokens=50),
                                                                deadline=time.monotonic() + 10)
    [seen] = fake.requests(containing=prompt)
    assert seen["body"]["max_tokens"] == 50 and "max_completion_tokens" not in seen["body"]


def test_the_process_keeps_one_client_per_settings(fake: FakeOpenAI) -> None:
    assert llm_openai.client_for(*settings(fake)) is llm_openai.client_for(*settings(fake))
    assert llm_openai.client_for(*settings(fake)) is not llm_openai.client_for(*settings(fake, HUB_LLM_TIMEOUT_S="5"))


def test_the_stand_in_streams_the_same_answer_for_the_streaming_issue(fake: FakeOpenAI) -> None:
    prompt = tagged("stream me")
    sdk = openai.OpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0)
    whole = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])
    pieces, usage = [], None
    for chunk in sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}],
                                             stream=True, stream_options={"include_usage": True}):
        pieces += [c.delta.content or "" for c in chunk.choices]
        usage = chunk.usage or usage
    assert "".join(pieces) == whole.choices[0].message.content and usage is not None
    assert usage.total_tokens == (whole.usage.total_tokens if whole.usage else -1)
