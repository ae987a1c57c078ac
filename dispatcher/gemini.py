"""``hub.call_llm``: one Gemini generateContent call through the google-genai SDK, with our own retries.

The SDK's own retries are off (``HttpRetryOptions(attempts=1)``), so tenacity here is the only
retry layer: exponential backoff with jitter, for 408 / 429 / 5xx / timeouts / connection errors
only, and never past the run's deadline. Every failure becomes an ``LLMFailure`` whose ``kind``
is what the agent sees as ``hub.LLMError.kind``. The API key stays in this process: it is never
logged, never put in an error message (masked if Gemini ever echoed it) and never sent to the sandbox.

google-genai takes ~0.8 s to import: it is imported by the client when it first needs it (``warm``,
which the worker calls beside start-up, or the first call), not with this module, so neither the
dispatcher's start nor a dispatcher without a key waits for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base

from core.backoff import Backoff, tenacity_wait
from dispatcher.config import LLMSettings
from dispatcher.llm import LLMAnswer, LLMErrorKind, LLMFailure, LLMRequest, Usage
from hubpy.hub._redact import Redactor

if TYPE_CHECKING:
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types

MIN_TRY_S = 0.5  # no try is started with less time than this left before the run's deadline
# finishReason values meaning "the answer was withheld", per Gemini's FinishReason enum.
BLOCK_FINISH_REASONS = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT",
})


def _usage(response: types.GenerateContentResponse) -> Usage:
    meta = response.usage_metadata
    if meta is None:
        return Usage()
    prompt = meta.prompt_token_count or 0
    output = meta.candidates_token_count or 0
    return Usage(prompt, output, meta.total_token_count or prompt + output)


def _error_reason(details: Any) -> str | None:
    """The google.rpc.ErrorInfo reason of an error body (API_KEY_INVALID for a bad key)."""
    error = details.get("error") if isinstance(details, dict) else None
    for item in (error or {}).get("details") or []:
        if isinstance(item, dict) and isinstance(item.get("reason"), str):
            return str(item["reason"])
    return None


def classify_api_error(exc: genai_errors.APIError) -> LLMFailure:
    code = int(exc.code or 0)
    what = f"Gemini answered HTTP {code}" + (f" {exc.status}" if exc.status else "")
    text = f"{what}: {exc.message}" if exc.message else what
    if code == 400 and _error_reason(exc.details) == "API_KEY_INVALID":
        return LLMFailure(LLMErrorKind.AUTH, text + " (check the dispatcher's GEMINI_API_KEY)", status=code)
    if code in (401, 403):
        return LLMFailure(LLMErrorKind.AUTH, text, status=code)
    if code == 429:
        return LLMFailure(LLMErrorKind.RATE_LIMITED, text, status=code)
    if code == 408 or code >= 500:
        return LLMFailure(LLMErrorKind.UNAVAILABLE, text, status=code)
    return LLMFailure(LLMErrorKind.BAD_REQUEST, text, status=code)


def transport_failure(exc: Exception, timeout_s: float) -> LLMFailure | None:
    """A timeout or connection error of the SDK's HTTP client, else None (a bug: let it propagate).

    Matched by class name: the SDK uses httpx or its fork httpx2, whose classes share names, not types.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "TimeoutException" in names:
        return LLMFailure(LLMErrorKind.UNAVAILABLE, f"Gemini did not answer within {timeout_s:.1f} s")
    if "TransportError" in names:
        return LLMFailure(LLMErrorKind.UNAVAILABLE, f"cannot reach Gemini ({type(exc).__name__})")
    return None


def read_answer(response: types.GenerateContentResponse, model: str) -> LLMAnswer:
    """The answer's text, or the LLMFailure a 200 response can still mean (block, MAX_TOKENS, empty)."""
    usage = _usage(response)
    feedback = response.prompt_feedback
    candidate = response.candidates[0] if response.candidates else None
    finish = candidate.finish_reason.value if candidate is not None and candidate.finish_reason else None
    text = ""
    if candidate is not None and candidate.content is not None:
        text = "".join(p.text for p in candidate.content.parts or [] if p.text and not p.thought)
    failure: LLMFailure | None = None
    if feedback is not None and feedback.block_reason is not None:
        failure = LLMFailure(LLMErrorKind.BLOCKED, f"the prompt was blocked ({feedback.block_reason.value})")
    elif not text and finish in BLOCK_FINISH_REASONS:
        failure = LLMFailure(LLMErrorKind.BLOCKED, f"the answer was blocked (finishReason {finish})")
    elif not text and finish == "MAX_TOKENS":
        failure = LLMFailure(LLMErrorKind.MAX_TOKENS, "the model reached max_output_tokens before writing any text")
    elif not text:
        failure = LLMFailure(LLMErrorKind.UNAVAILABLE, f"Gemini returned no text (finishReason {finish or 'none'})",
                             retryable=False)
    if failure is not None:
        failure.usage = usage
        raise failure
    return LLMAnswer(text=text, model=model, model_version=response.model_version or model, usage=usage,
                     finish_reason=finish)


class _OutOfTime(stop_base):
    """Tenacity stop condition: sleeping and then trying again must still fit before the run's deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> bool:
        return time.monotonic() + (state.upcoming_sleep or 0.0) + MIN_TRY_S > self.deadline


class GeminiClient:
    """One per dispatcher process (the worker makes it); thread-safe (the SDK's httpx client is)."""

    def __init__(self, cfg: LLMSettings) -> None:
        self.cfg = cfg
        self.redact = Redactor([cfg.gemini_api_key] if cfg.gemini_api_key else [])
        self._client: genai.Client | None = None
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.cfg.gemini_api_key)

    def warm(self) -> None:
        """Import google-genai and build its client now, so the first call does not wait for it."""
        self._sdk()

    def _sdk(self) -> genai.Client:
        with self._lock:
            if self._client is None:
                from google import genai  # here, not at the top: see the module's docstring
                from google.genai import types

                self._client = genai.Client(
                    api_key=self.cfg.gemini_api_key,
                    vertexai=False,
                    http_options=types.HttpOptions(
                        base_url=self.cfg.gemini_base_url,  # None: Google's default endpoint
                        timeout=int(self.cfg.llm_timeout_s * 1000),
                        retry_options=types.HttpRetryOptions(attempts=1),  # ours (tenacity) are the only retries
                    ),
                )
            return self._client

    def _config(self, req: LLMRequest, deadline: float) -> tuple[Any, float]:
        """One try's GenerateContentConfig and its timeout: what is left of the run, at most LLM_TIMEOUT_S."""
        from google.genai import types  # loaded by _sdk() by now

        left = deadline - time.monotonic()
        if left < MIN_TRY_S:
            raise LLMFailure(LLMErrorKind.UNAVAILABLE, "no time left in the agent's run for the call", retryable=False)
        timeout_s = min(self.cfg.llm_timeout_s, left)
        config = types.GenerateContentConfig(
            system_instruction=req.system,
            temperature=req.temperature,
            max_output_tokens=req.max_output_tokens,
            http_options=types.HttpOptions(timeout=max(1, int(timeout_s * 1000))),
        )
        return config, timeout_s

    def _once(self, req: LLMRequest, deadline: float) -> LLMAnswer:
        from google.genai import errors as genai_errors  # loaded by _sdk() by now

        client = self._sdk()
        config, timeout_s = self._config(req, deadline)
        try:
            response = client.models.generate_content(model=req.model, contents=req.contents(), config=config)
        except genai_errors.APIError as exc:
            raise classify_api_error(exc) from None
        except Exception as exc:
            failure = transport_failure(exc, timeout_s)
            if failure is None:
                raise
            raise failure from None
        return read_answer(response, req.model)

    def _once_stream(self, req: LLMRequest, deadline: float, on_chunk: Callable[[str], None]) -> LLMAnswer:
        """One ``generate_content_stream`` call (``streamGenerateContent?alt=sse``): each piece of text goes to
        ``on_chunk`` as it arrives. A failure after the first piece is final (``retryable`` False): the agent
        has that text already, so another try cannot start over."""
        from google.genai import errors as genai_errors  # loaded by _sdk() by now

        client = self._sdk()
        config, timeout_s = self._config(req, deadline)
        pieces: list[str] = []
        last: types.GenerateContentResponse | None = None
        finish: str | None = None
        try:
            for response in client.models.generate_content_stream(model=req.model, contents=req.contents(), config=config):
                last = response
                candidate = response.candidates[0] if response.candidates else None
                if candidate is not None and candidate.finish_reason:
                    finish = candidate.finish_reason.value
                text = ""
                if candidate is not None and candidate.content is not None:
                    text = "".join(p.text for p in candidate.content.parts or [] if p.text and not p.thought)
                if text:
                    pieces.append(text)
                    on_chunk(text)
        except genai_errors.APIError as exc:
            raise self._mid_stream(classify_api_error(exc), pieces) from None
        except LLMFailure:
            raise
        except Exception as exc:
            failure = transport_failure(exc, timeout_s)
            if failure is None:
                raise
            raise self._mid_stream(failure, pieces) from None
        if last is None:
            raise LLMFailure(LLMErrorKind.UNAVAILABLE, "Gemini's stream ended without an answer", retryable=False)
        if not pieces:
            read_answer(last, req.model)  # raises the failure a text-less answer means (block, MAX_TOKENS, empty)
        return LLMAnswer(text="".join(pieces), model=req.model, model_version=last.model_version or req.model,
                         usage=_usage(last), finish_reason=finish)

    @staticmethod
    def _mid_stream(failure: LLMFailure, pieces: list[str]) -> LLMFailure:
        if pieces:
            failure.retryable = False
            failure.message = f"{failure.message} (the stream broke after {len(pieces)} chunk(s))"
        return failure

    def generate_stream(self, req: LLMRequest, *, deadline: float, on_chunk: Callable[[str], None],
                        on_retry: Callable[[int, LLMFailure], None] | None = None) -> tuple[LLMAnswer, int]:
        """``generate``, streamed: the text goes to ``on_chunk`` piece by piece as Gemini produces it; the whole
        answer is returned at the end. Retried like ``generate`` until the first piece has been passed on."""
        return self.generate(req, deadline=deadline, on_retry=on_retry,
                             once=lambda: self._once_stream(req, deadline, on_chunk))

    def generate(self, req: LLMRequest, *, deadline: float, on_retry: Callable[[int, LLMFailure], None] | None = None,
                 once: Callable[[], LLMAnswer] | None = None) -> tuple[LLMAnswer, int]:
        """The answer and how many tries it took; raises LLMFailure (with ``.tries`` set). ``once``: one try
        (default: one generateContent call)."""
        if not self.configured:
            raise LLMFailure(LLMErrorKind.NOT_CONFIGURED, "call_llm is not configured on this hub (GEMINI_API_KEY is unset)")
        one_try = once if once is not None else (lambda: self._once(req, deadline))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if on_retry is not None and isinstance(exc, LLMFailure):
                on_retry(state.attempt_number, exc)

        tries = 0
        try:
            for attempt in Retrying(
                retry=retry_if_exception(lambda e: isinstance(e, LLMFailure) and e.retryable),
                wait=tenacity_wait(Backoff(self.cfg.llm_retry_base_s, self.cfg.llm_retry_max_s)),  # full jitter
                stop=stop_after_attempt(self.cfg.llm_retry_attempts) | _OutOfTime(deadline),
                before_sleep=before_sleep,
                reraise=True,
            ):
                with attempt:
                    tries = attempt.retry_state.attempt_number
                    return one_try(), tries
        except LLMFailure as exc:
            exc.message = self.redact(exc.message)
            exc.tries = tries
            raise
        raise AssertionError("unreachable")  # pragma: no cover
