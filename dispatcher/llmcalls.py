"""``hub.call_llm``: the call handler that checks a call, asks the model and records what it cost.

An ``openai:<name>`` model goes to the OpenAI-compatible endpoint (dispatcher/llm_openai.py), any other to
Gemini (dispatcher/gemini.py): the same checks, kinds, retries, record and limit for both.

At most ``HUB_MAX_LLM_CALLS`` per run (the agent's own AgentEnvVar up to ``HUB_MAX_LLM_CALLS_MAX``, else the
service's); each call is one JobLog line (model, outcome, tokens, latency, tries), one metric and one entry
of the outbox row's ``result["llm"]``. No prompt text is logged.

``stream: true`` (``hub.call_llm(..., stream=True)``): the answer's text goes to the agent as ``chunk`` reply
lines while the model produces it (Gemini's ``generate_content_stream``), then the usual final reply with the
whole text; a failure midway is an error reply after the chunks (the agent's iterator raises ``LLMError``).
Both providers stream (Gemini's ``streamGenerateContent``, the OpenAI SDK's ``stream=True``); a client without
``generate_stream`` would answer a streaming call in one chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import structlog

from core import metrics
from dispatcher import llm, protocol
from dispatcher.calls import CallScope, error_reply
from dispatcher.config import DispatcherConfig, LLMSettings, OpenAISettings
from dispatcher.llm_models import Provider, split_model
from dispatcher.llm_openai import client_for

log = structlog.get_logger("dispatcher.calls")


class LlmClient(Protocol):
    def generate(self, req: llm.LLMRequest, *, deadline: float,
                 on_retry: Callable[[int, llm.LLMFailure], None] | None = None) -> tuple[llm.LLMAnswer, int]: ...


class StreamingLlmClient(LlmClient, Protocol):
    def generate_stream(self, req: llm.LLMRequest, *, deadline: float, on_chunk: Callable[[str], None],
                        on_retry: Callable[[int, llm.LLMFailure], None] | None = None) -> tuple[llm.LLMAnswer, int]: ...


class StreamStopped(Exception):
    """The run stopped (or its stdin closed) while a streamed answer was being relayed."""


class LlmCalls:
    def __init__(self, cfg: DispatcherConfig, client: LlmClient, openai: LlmClient | None = None) -> None:
        """``client``: Gemini's; ``openai``: for openai: models (default: the process's, from OPENAI_*)."""
        self.cfg = cfg
        self.client = client
        self.openai = openai if openai is not None else client_for(OpenAISettings.of(cfg), LLMSettings.of(cfg))

    def __call__(self, call: protocol.Call, scope: CallScope) -> str:
        return self._answer(call, scope, None)

    def answer_streaming(self, call: protocol.Call, scope: CallScope, partial: Callable[[str], None]) -> str:
        """A ``stream: true`` call: ``partial`` gets each chunk line as the model produces it; returns the final
        reply line (the whole text, or the error)."""
        return self._answer(call, scope, partial)

    def _answer(self, call: protocol.Call, scope: CallScope, partial: Callable[[str], None] | None) -> str:
        cfg = self.cfg
        scope.stats.llm_requests += 1
        n = scope.stats.llm_requests
        cap = cfg.max_llm_calls if scope.max_llm_calls is None else scope.max_llm_calls
        if n > cap:
            if n == cap + 1:
                scope.wb.log("warning", f"llm call refused: over HUB_MAX_LLM_CALLS ({cap}) for this run")
            return error_reply(call.id, llm.LLMErrorKind.LIMIT.value,
                               f"this run may make at most {cap} call_llm calls (HUB_MAX_LLM_CALLS)")
        try:
            req = llm.parse_request(call.params, chat_history=list(scope.context.get("chat_history") or []),
                                    default_model=cfg.llm_model, max_prompt_chars=cfg.max_message_chars)
        except llm.LLMFailure as exc:
            return error_reply(call.id, exc.kind.value, exc.message)

        def on_retry(tries: int, exc: llm.LLMFailure) -> None:
            scope.wb.log("warning", f"llm call {n}: {exc.kind.value} ({scope.redact.head(exc.message, 200)}); retrying "
                                    f"(try {tries + 1} of at most {cfg.llm_retry_attempts})")

        client = self.openai if split_model(req.model)[0] is Provider.OPENAI else self.client
        started = time.monotonic()
        def on_chunk(text: str) -> None:
            if scope.control.should_stop():
                raise StreamStopped("the run stopped")
            assert partial is not None
            try:
                partial(protocol.encode_chunk(call.id, text))
            except Exception as exc:  # the agent's stdin is gone (its run ended)
                raise StreamStopped("the agent's stdin closed") from exc

        try:
            if partial is None:
                answer, tries = client.generate(req, deadline=scope.deadline, on_retry=on_retry)
            elif hasattr(client, "generate_stream"):
                streaming: StreamingLlmClient = client  # type: ignore[assignment]
                answer, tries = streaming.generate_stream(req, deadline=scope.deadline, on_chunk=on_chunk, on_retry=on_retry)
            else:  # no streaming for this provider: the whole text as one chunk
                answer, tries = client.generate(req, deadline=scope.deadline, on_retry=on_retry)
                on_chunk(answer.text)
        except StreamStopped as exc:
            latency = int((time.monotonic() - started) * 1000)
            self._record(scope, llm.CallRecord(req.model, False, llm.LLMErrorKind.UNAVAILABLE.value, llm.Usage(), latency, 1))
            log.info("llm_call", ok=False, kind="stopped", model=req.model, latency_ms=latency)
            return error_reply(call.id, llm.LLMErrorKind.UNAVAILABLE.value, f"the streamed answer stopped: {exc}")
        except llm.LLMFailure as exc:
            latency = int((time.monotonic() - started) * 1000)
            self._record(scope, llm.CallRecord(req.model, False, exc.kind.value, exc.usage or llm.Usage(), latency, exc.tries))
            log.info("llm_call", ok=False, kind=exc.kind.value, model=req.model, tries=exc.tries, latency_ms=latency)
            return error_reply(call.id, exc.kind.value, exc.message)
        latency = int((time.monotonic() - started) * 1000)
        self._record(scope, llm.CallRecord(req.model, True, None, answer.usage, latency, tries))
        log.info("llm_call", ok=True, model=req.model, tries=tries, latency_ms=latency,
                 prompt_tokens=answer.usage.prompt_tokens, output_tokens=answer.usage.output_tokens)
        result = {
            "text": answer.text,
            "model": answer.model_version,
            "finish_reason": answer.finish_reason,
            "usage": {"prompt_tokens": answer.usage.prompt_tokens, "output_tokens": answer.usage.output_tokens,
                      "total_tokens": answer.usage.total_tokens},
        }
        return protocol.encode_reply(call.id, True, result=result)

    @staticmethod
    def _record(scope: CallScope, record: llm.CallRecord) -> None:
        metrics.llm_call(record.model, "ok" if record.ok else str(record.kind),
                         prompt_tokens=record.usage.prompt_tokens, output_tokens=record.usage.output_tokens)
        usage = scope.stats.llm_usage()
        usage.add(record)
        u = record.usage
        outcome = "ok" if record.ok else f"failed ({record.kind})"
        scope.wb.log("info" if record.ok else "warning",
                     f"llm call {usage.calls}: {record.model} {outcome}, tokens {u.prompt_tokens} prompt + "
                     f"{u.output_tokens} output = {u.total_tokens}, {record.latency_ms} ms, {record.tries} "
                     f"tr{'y' if record.tries == 1 else 'ies'}")
