"""``call_llm`` with ``model="openai:<name>"``: one chat completion through the official ``openai`` SDK, against
OpenAI or any OpenAI-compatible endpoint (``OPENAI_BASE_URL``: Groq, OpenRouter, Together, Ollama, vLLM, ...).

It takes the same ``LLMRequest`` and gives the same ``LLMAnswer`` / ``LLMFailure`` (with the same kinds) as the
Gemini client in dispatcher/llm.py, with the same retry rules: the SDK's own retries are off
(``max_retries=0``), tenacity retries 408 / 409 / 429 / 5xx / timeouts / connection errors only, with
exponential backoff and jitter, and never past the run's deadline. The key stays in this process: never
logged, never in an error message (masked if the endpoint echoes it), never sent to the sandbox.

``generate_stream`` (``hub.call_llm(..., stream=True)``) is the same request with ``stream=True`` and
``stream_options={"include_usage": True}``: each content delta goes to ``on_chunk`` as it comes, with the same
errors and kinds; a failure after the first chunk is not retried (the agent has that text already).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import openai
from openai.types.chat import ChatCompletion
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential
from tenacity.stop import stop_base

from dispatcher.config import LLMSettings, OpenAISettings
from dispatcher.llm import LLMAnswer, LLMErrorKind, LLMFailure, LLMRequest, Usage
from hubpy.hub._redact import Redactor

MIN_TRY_S = 0.5  # as dispatcher/llm.py: no try is started with less time than this left
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# OpenAI's finish reasons in the names call_llm reports for Gemini, so an agent reads one vocabulary.
FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY", "tool_calls": "TOOL_CALLS",
                  "function_call": "TOOL_CALLS"}
ENDPOINT = "the OpenAI-compatible endpoint"


def messages_of(req: LLMRequest) -> list[dict[str, str]]:
    """The request as chat messages: system first, the history's turns (Gemini's ``model`` is ``assistant``),
    then the prompt."""
    messages: list[dict[str, str]] = []
    if req.system:
        messages.append({"role": "system", "content": req.system})
    for turn in req.history:
        if turn.text:
            messages.append({"role": "assistant" if turn.role == "model" else "user", "content": turn.text})
    messages.append({"role": "user", "content": req.prompt})
    return messages


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:500]
    return ""


def classify_status_error(exc: openai.APIStatusError) -> LLMFailure:
    code = exc.status_code
    detail = _error_message(exc)
    text = f"{ENDPOINT} answered HTTP {code}" + (f": {detail}" if detail else "")
    error_code = exc.code or ""
    if code in (401, 403):
        return LLMFailure(LLMErrorKind.AUTH, text + " (check the dispatcher's OPENAI_API_KEY)", status=code)
    if code == 429:
        # "insufficient_quota" is a billing limit: trying again in a second does not help.
        return LLMFailure(LLMErrorKind.RATE_LIMITED, text, status=code, retryable=error_code != "insufficient_quota")
    if code in (408, 409) or code >= 500:
        return LLMFailure(LLMErrorKind.UNAVAILABLE, text, status=code)
    if error_code == "content_filter" or error_code == "content_policy_violation":
        return LLMFailure(LLMErrorKind.BLOCKED, text, status=code)
    return LLMFailure(LLMErrorKind.BAD_REQUEST, text, status=code)


def classify_error(exc: openai.OpenAIError, timeout_s: float) -> LLMFailure | None:
    """The LLMFailure an SDK error means, or None for one that is a bug here (let it propagate)."""
    if isinstance(exc, openai.APITimeoutError):
        return LLMFailure(LLMErrorKind.UNAVAILABLE, f"{ENDPOINT} did not answer within {timeout_s:.1f} s")
    if isinstance(exc, openai.APIConnectionError):
        return LLMFailure(LLMErrorKind.UNAVAILABLE, f"cannot reach {ENDPOINT} ({type(exc.__cause__ or exc).__name__})")
    if isinstance(exc, openai.APIStatusError):
        return classify_status_error(exc)
    if isinstance(exc, openai.APIResponseValidationError):
        return LLMFailure(LLMErrorKind.UNAVAILABLE, f"{ENDPOINT} sent a response that is not a chat completion",
                          retryable=False)
    return None


def _usage(completion: ChatCompletion) -> Usage:
    u = completion.usage
    if u is None:
        return Usage()
    prompt, output = u.prompt_tokens or 0, u.completion_tokens or 0
    return Usage(prompt, output, u.total_tokens or prompt + output)


def read_answer(completion: ChatCompletion, model: str) -> LLMAnswer:
    """The answer's text, or the LLMFailure a 200 can still mean (refusal, content filter, length, empty)."""
    usage = _usage(completion)
    choice = completion.choices[0] if completion.choices else None
    raw_finish = choice.finish_reason if choice is not None else None
    finish = FINISH_REASONS.get(str(raw_finish), str(raw_finish).upper()) if raw_finish else None
    message = choice.message if choice is not None else None
    text = (message.content or "") if message is not None else ""
    failure: LLMFailure | None = None
    if not text and message is not None and message.refusal:
        failure = LLMFailure(LLMErrorKind.BLOCKED, f"the model refused: {message.refusal[:300]}")
    elif not text and raw_finish == "content_filter":
        failure = LLMFailure(LLMErrorKind.BLOCKED, "the answer was blocked (finish_reason content_filter)")
    elif not text and raw_finish == "length":
        failure = LLMFailure(LLMErrorKind.MAX_TOKENS, "the model reached max_output_tokens before writing any text")
    elif not text:
        failure = LLMFailure(LLMErrorKind.UNAVAILABLE, f"{ENDPOINT} returned no text (finish_reason {raw_finish or 'none'})",
                             retryable=False)
    if failure is not None:
        failure.usage = usage
        raise failure
    return LLMAnswer(text=text, model=model, model_version=completion.model or model, usage=usage, finish_reason=finish)


class _OutOfTime(stop_base):
    """Tenacity stop condition: sleeping and then trying again must still fit before the run's deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> bool:
        return time.monotonic() + (state.upcoming_sleep or 0.0) + MIN_TRY_S > self.deadline


class OpenAIClient:
    """One per dispatcher process (``client_for``); thread-safe (the SDK's HTTP client is, and pools).

    ``settings``: the endpoint and key (OPENAI_*); ``llm``: the timeout and retries, the same as Gemini's
    (HUB_LLM_TIMEOUT_S, HUB_LLM_RETRY_*)."""

    def __init__(self, settings: OpenAISettings, llm: LLMSettings) -> None:
        self.settings = settings
        self.llm = llm
        self.redact = Redactor([settings.openai_api_key] if settings.openai_api_key else [])
        self._client: openai.OpenAI | None = None
        if settings.openai_api_key:
            self._client = openai.OpenAI(
                api_key=settings.openai_api_key,
                base_url=settings.openai_base_url or DEFAULT_BASE_URL,
                timeout=llm.llm_timeout_s,
                max_retries=0,  # ours (tenacity) are the only retries
            )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _create_kwargs(self, req: LLMRequest, model: str, timeout_s: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": model, "messages": messages_of(req), "timeout": timeout_s}
        if req.temperature is not None:
            kwargs["temperature"] = req.temperature
        if req.max_output_tokens is not None:
            kwargs[self.settings.openai_max_tokens_field] = req.max_output_tokens
        return kwargs

    def _once(self, req: LLMRequest, model: str, deadline: float) -> LLMAnswer:
        assert self._client is not None
        left = deadline - time.monotonic()
        if left < MIN_TRY_S:
            raise LLMFailure(LLMErrorKind.UNAVAILABLE, "no time left in the agent's run for the call", retryable=False)
        timeout_s = min(self.llm.llm_timeout_s, left)
        try:
            completion = self._client.chat.completions.create(**self._create_kwargs(req, model, timeout_s))
        except openai.OpenAIError as exc:
            failure = classify_error(exc, timeout_s)
            if failure is None:
                raise
            raise failure from None
        return read_answer(completion, req.model)

    def _once_stream(self, req: LLMRequest, model: str, deadline: float, on_chunk: Callable[[str], None]) -> LLMAnswer:
        assert self._client is not None
        left = deadline - time.monotonic()
        if left < MIN_TRY_S:
            raise LLMFailure(LLMErrorKind.UNAVAILABLE, "no time left in the agent's run for the call", retryable=False)
        timeout_s = min(self.llm.llm_timeout_s, left)
        kwargs = {**self._create_kwargs(req, model, timeout_s), "stream": True, "stream_options": {"include_usage": True}}
        pieces: list[str] = []
        refusal: list[str] = []
        usage = Usage()
        raw_finish: str | None = None
        version: str | None = None
        try:
            with self._client.chat.completions.create(**kwargs) as stream:
                for chunk in stream:
                    version = chunk.model or version
                    if chunk.usage is not None:
                        p, o = chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0
                        usage = Usage(p, o, chunk.usage.total_tokens or p + o)
                    for choice in chunk.choices[:1]:
                        raw_finish = choice.finish_reason or raw_finish
                        if choice.delta.refusal:
                            refusal.append(choice.delta.refusal)
                        if choice.delta.content:
                            pieces.append(choice.delta.content)
                            on_chunk(choice.delta.content)
        except openai.OpenAIError as exc:
            failure = classify_error(exc, timeout_s)
            if failure is None:
                raise
            if pieces:
                failure.retryable = False
                failure.message = f"{failure.message} (the stream broke after {len(pieces)} chunk(s))"
            raise failure from None
        finish = FINISH_REASONS.get(raw_finish, raw_finish.upper()) if raw_finish else None
        if not pieces:
            if refusal:
                failure = LLMFailure(LLMErrorKind.BLOCKED, f"the model refused: {''.join(refusal)[:300]}")
            elif raw_finish == "content_filter":
                failure = LLMFailure(LLMErrorKind.BLOCKED, "the answer was blocked (finish_reason content_filter)")
            elif raw_finish == "length":
                failure = LLMFailure(LLMErrorKind.MAX_TOKENS, "the model reached max_output_tokens before writing any text")
            else:
                failure = LLMFailure(LLMErrorKind.UNAVAILABLE,
                                     f"{ENDPOINT} returned no text (finish_reason {raw_finish or 'none'})", retryable=False)
            failure.usage = usage
            raise failure
        return LLMAnswer(text="".join(pieces), model=req.model, model_version=version or req.model, usage=usage,
                         finish_reason=finish)

    def generate_stream(self, req: LLMRequest, *, deadline: float, on_chunk: Callable[[str], None],
                        on_retry: Callable[[int, LLMFailure], None] | None = None) -> tuple[LLMAnswer, int]:
        """``generate``, streamed: each piece of text goes to ``on_chunk`` as the endpoint sends it."""
        name = req.model.removeprefix("openai:")
        return self.generate(req, deadline=deadline, on_retry=on_retry,
                             once=lambda: self._once_stream(req, name, deadline, on_chunk))

    def generate(self, req: LLMRequest, *, model: str | None = None, deadline: float,
                 on_retry: Callable[[int, LLMFailure], None] | None = None,
                 once: Callable[[], LLMAnswer] | None = None) -> tuple[LLMAnswer, int]:
        """The answer and how many tries it took; raises LLMFailure (with ``.tries`` set).

        ``model`` is the name the endpoint knows (without ``openai:``); by default ``req.model`` without it.
        ``once``: one try (default: one chat completion).
        """
        name = model or req.model.removeprefix("openai:")
        if self._client is None:
            raise LLMFailure(LLMErrorKind.NOT_CONFIGURED,
                             "openai: models are not configured on this hub (OPENAI_API_KEY is unset)")

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if on_retry is not None and isinstance(exc, LLMFailure):
                on_retry(state.attempt_number, exc)

        tries = 0
        try:
            for attempt in Retrying(
                retry=retry_if_exception(lambda e: isinstance(e, LLMFailure) and e.retryable),
                wait=wait_random_exponential(multiplier=self.llm.llm_retry_base_s, max=self.llm.llm_retry_max_s),
                stop=stop_after_attempt(self.llm.llm_retry_attempts) | _OutOfTime(deadline),
                before_sleep=before_sleep,
                reraise=True,
            ):
                with attempt:
                    tries = attempt.retry_state.attempt_number
                    return (once() if once is not None else self._once(req, name, deadline)), tries
        except LLMFailure as exc:
            exc.message = self.redact(exc.message)
            exc.tries = tries
            raise
        raise AssertionError("unreachable")  # pragma: no cover


_clients: dict[tuple[OpenAISettings, LLMSettings], OpenAIClient] = {}
_clients_lock = threading.Lock()


def client_for(settings: OpenAISettings, llm: LLMSettings) -> OpenAIClient:
    """The process's client for these settings."""
    with _clients_lock:
        client = _clients.get((settings, llm))
        if client is None:
            client = _clients[settings, llm] = OpenAIClient(settings, llm)
        return client
