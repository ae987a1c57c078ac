"""``hub.call_llm``'s values: the failure kinds the agent sees, the request checked from the call's
params, the answer and what it cost. The call itself goes to Gemini in ``dispatcher/gemini.py``, or, for an
``openai:<name>`` model (dispatcher/llm_models.py), to an OpenAI-compatible endpoint in ``dispatcher/llm_openai.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from dispatcher.llm_models import BadModelName, Provider, split_model

if TYPE_CHECKING:
    from google.genai import types

MAX_SYSTEM_CHARS = 100_000


class LLMErrorKind(StrEnum):
    """``hub.LLMError.kind`` values."""

    RATE_LIMITED = "rate_limited"      # 429 after our retries
    UNAVAILABLE = "unavailable"        # 5xx, 408, timeouts, connection errors (after retries); no time left
    BAD_REQUEST = "bad_request"        # 400 (other than a bad key), 404 (unknown model), bad parameters
    AUTH = "auth"                      # 400 API_KEY_INVALID, 401, 403
    BLOCKED = "blocked"                # a safety block: no text, blockReason or finishReason SAFETY etc.
    MAX_TOKENS = "max_tokens"          # finishReason MAX_TOKENS before any text
    NOT_CONFIGURED = "not_configured"  # GEMINI_API_KEY (OPENAI_API_KEY for openai: models) unset
    LIMIT = "limit"                    # over HUB_MAX_LLM_CALLS for this run

    @property
    def retryable(self) -> bool:
        return self in (LLMErrorKind.RATE_LIMITED, LLMErrorKind.UNAVAILABLE)


class LLMFailure(Exception):
    def __init__(self, kind: LLMErrorKind, message: str, *, retryable: bool | None = None, status: int | None = None) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message
        self.retryable = kind.retryable if retryable is None else retryable
        self.status = status
        self.tries = 0
        self.usage: Usage | None = None  # a blocked answer still used (and billed) prompt tokens


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class Turn:
    role: str  # Gemini's: "user" or "model"
    text: str


@dataclass(frozen=True)
class LLMRequest:
    prompt: str
    system: str | None
    history: list[Turn]
    model: str  # Gemini's name, or "openai:<name>" (the prefix kept: it is what the JobLog and result name)
    temperature: float | None
    max_output_tokens: int | None

    def contents(self) -> list[types.Content]:
        from google.genai import types  # imported when first needed: see dispatcher/gemini.py

        turns = [*self.history, Turn("user", self.prompt)]
        return [types.Content(role=t.role, parts=[types.Part(text=t.text)]) for t in turns]


@dataclass(frozen=True)
class LLMAnswer:
    text: str
    model: str          # the model asked for
    model_version: str  # what Gemini says answered (modelVersion)
    usage: Usage
    finish_reason: str | None


@dataclass(frozen=True)
class CallRecord:
    """One call_llm, for the JobLog line and the run's result (no prompt text, no key)."""

    model: str
    ok: bool
    kind: str | None
    usage: Usage
    latency_ms: int
    tries: int


def history_turns(chat_history: list[dict[str, Any]]) -> tuple[list[Turn], list[str]]:
    """The session's messages as Gemini turns (user→user, agent→model); system messages come back apart."""
    turns: list[Turn] = []
    system: list[str] = []
    for message in chat_history:
        role, content = message.get("role"), message.get("content")
        if not isinstance(content, str) or not content:
            continue  # Gemini refuses a turn with no parts
        match role:
            case "user":
                turns.append(Turn("user", content))
            case "agent":
                turns.append(Turn("model", content))
            case "system":
                system.append(content)
            case _:
                continue
    return turns, system


def _bad(message: str) -> LLMFailure:
    return LLMFailure(LLMErrorKind.BAD_REQUEST, message)


def parse_request(params: dict[str, Any], *, chat_history: list[dict[str, Any]], default_model: str,
                  max_prompt_chars: int) -> LLMRequest:
    """The call's params (as hub.call_llm sends them) checked and turned into a request."""
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad("prompt must be a non-empty str")
    if len(prompt) > max_prompt_chars:
        raise _bad(f"prompt has {len(prompt)} characters, over the limit of {max_prompt_chars}")
    system = params.get("system")
    if system is not None and (not isinstance(system, str) or len(system) > MAX_SYSTEM_CHARS):
        raise _bad(f"system must be a str of at most {MAX_SYSTEM_CHARS} characters, or None")
    model = params.get("model") or default_model
    if not isinstance(model, str) or len(model) > 200:
        raise _bad("model must be a model name such as gemini-2.5-flash or openai:gpt-4o-mini")
    try:
        provider, name = split_model(model)
    except BadModelName as exc:
        raise _bad(str(exc)) from None
    temperature = params.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or not 0 <= temperature <= 2):
        raise _bad("temperature must be a number from 0 to 2, or None")
    max_tokens = params.get("max_output_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise _bad("max_output_tokens must be a positive int, or None")
    history: list[Turn] = []
    if params.get("history"):
        history, system_messages = history_turns(chat_history)
        if system_messages:
            system = "\n\n".join([*system_messages, *([system] if system else [])])
    return LLMRequest(
        prompt=prompt,
        system=system,
        history=history,
        model=name if provider is Provider.GEMINI else f"{Provider.OPENAI.value}:{name}",
        temperature=None if temperature is None else float(temperature),
        max_output_tokens=max_tokens,
    )
