"""What one try of a run counted: the relay and the call handlers add to it, the summary reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dispatcher.llm import CallRecord

if TYPE_CHECKING:  # only a type here: the operator commands that read results need not load the HTTP client
    from dispatcher.httpcall.run import RunHttp


@dataclass
class LlmUsage:
    """hub.call_llm calls that reached the model, for the outbox row's ``result["llm"]``."""

    calls: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    latency_ms: int = 0
    models: dict[str, int] = field(default_factory=dict)
    per_call: list[dict[str, Any]] = field(default_factory=list)

    def add(self, record: CallRecord) -> None:
        usage = record.usage
        self.calls += 1
        self.failed += 0 if record.ok else 1
        self.prompt_tokens += usage.prompt_tokens
        self.output_tokens += usage.output_tokens
        self.total_tokens += usage.total_tokens
        self.latency_ms += record.latency_ms
        self.models[record.model] = self.models.get(record.model, 0) + 1
        self.per_call.append({
            "model": record.model, "ok": record.ok, "kind": record.kind, "tries": record.tries,
            "latency_ms": record.latency_ms, "prompt_tokens": usage.prompt_tokens,
            "output_tokens": usage.output_tokens, "total_tokens": usage.total_tokens,
        })

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "failed": self.failed, "prompt_tokens": self.prompt_tokens,
                "output_tokens": self.output_tokens, "total_tokens": self.total_tokens, "latency_ms": self.latency_ms,
                "models": dict(self.models), "per_call": list(self.per_call)}


@dataclass
class RunStats:
    messages: int = 0          # hub.send_message lines seen (the one over MAX_MESSAGES_PER_RUN included)
    protocol_errors: int = 0   # malformed hub lines
    llm_requests: int = 0      # call_llm lines answered, refused ones included (HUB_MAX_LLM_CALLS counts these)
    llm: LlmUsage | None = None  # from the first call_llm that reached the model on
    agent_calls: int = 0       # call_agent lines that ran or were refused by the lineage rules
    http: RunHttp | None = None  # hub.http calls of this try (dispatcher/httpcalls.py makes it at the first)
    output_tail: str = ""      # the agent's plain output, its newest part, redacted
    output_truncated: bool = False

    def llm_usage(self) -> LlmUsage:
        if self.llm is None:
            self.llm = LlmUsage()
        return self.llm
