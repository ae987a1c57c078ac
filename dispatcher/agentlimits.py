"""Per-agent run limits: reserved AgentEnvVars an agent's author sets on the hub, capped by the operator.

| AgentEnvVar | what | service default | operator's maximum |
| --- | --- | --- | --- |
| ``HUB_RUN_TIMEOUT_MS`` | wall time of a run, ms (≥ 1) | ``AGENT_RUN_TIMEOUT_MS`` | ``AGENT_RUN_TIMEOUT_MAX_MS`` |
| ``HUB_RUN_MEMORY_LIMIT`` | memory, bytes (≥ 1) | ``AGENT_RUN_MEMORY_LIMIT`` | ``AGENT_RUN_MEMORY_LIMIT_MAX`` (-1: none) |
| ``HUB_MAX_LLM_CALLS`` | ``call_llm`` calls per run (≥ 0) | ``HUB_MAX_LLM_CALLS`` | ``HUB_MAX_LLM_CALLS_MAX`` |

The rule, the same for each: a value over the operator's maximum is **clamped** to it (the run goes on at
the maximum); a value that is not a whole number in range is **refused** (the run goes on at the service's
default). Either way the Job's log gets one warning line naming the variable, its value and what the run
got, and a value that applies gets one info line. Pure: no I/O, so every case is unit-tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

TIMEOUT = "HUB_RUN_TIMEOUT_MS"
MEMORY = "HUB_RUN_MEMORY_LIMIT"
LLM_CALLS = "HUB_MAX_LLM_CALLS"
RESERVED = (TIMEOUT, MEMORY, LLM_CALLS)  # settings, not secrets: never masked in logs


@dataclass(frozen=True)
class Defaults:
    """The operator's side: the service's defaults and maxima (dispatcher/config.py)."""

    run_timeout_ms: int
    run_timeout_max_ms: int
    run_memory_limit: int | None  # None: Piston's default
    run_memory_limit_max: int | None  # None: no maximum of ours
    max_llm_calls: int
    max_llm_calls_max: int


@dataclass(frozen=True)
class AgentLimits:
    run_timeout_ms: int
    run_memory_limit: int | None
    max_llm_calls: int
    notes: tuple[tuple[str, str], ...] = ()  # (level, text): JobLog lines about the agent's own values


@dataclass(frozen=True)
class _Rule:
    name: str
    unit: str
    minimum: int
    default_name: str
    max_name: str


def _whole(raw: str) -> int | None:
    text = raw.strip()
    if not text or not text.lstrip("-").isdigit():
        return None
    return int(text)


def _apply(rule: _Rule, raw: str | None, default: int | None, maximum: int | None,
           notes: list[tuple[str, str]]) -> int | None:
    if raw is None:
        return default
    shown_default = "Piston's default" if default is None else f"{default} {rule.unit}"
    value = _whole(raw)
    if value is None or value < rule.minimum:
        notes.append(("warning", f"{rule.name}={raw.strip()[:40]!r} refused: not a whole number of {rule.unit} "
                                 f"from {rule.minimum}; this run gets the service's {shown_default} ({rule.default_name})"))
        return default
    if maximum is not None and value > maximum:
        notes.append(("warning", f"{rule.name}={value} clamped: over the operator's maximum {maximum} {rule.unit} "
                                 f"({rule.max_name}); this run gets {maximum} {rule.unit}"))
        return maximum
    notes.append(("info", f"{rule.name}={value}: this run gets {value} {rule.unit}"))
    return value


RULES = {
    TIMEOUT: _Rule(TIMEOUT, "ms", 1, "AGENT_RUN_TIMEOUT_MS", "AGENT_RUN_TIMEOUT_MAX_MS"),
    MEMORY: _Rule(MEMORY, "bytes", 1, "AGENT_RUN_MEMORY_LIMIT", "AGENT_RUN_MEMORY_LIMIT_MAX"),
    LLM_CALLS: _Rule(LLM_CALLS, "calls", 0, "HUB_MAX_LLM_CALLS", "HUB_MAX_LLM_CALLS_MAX"),
}


def agent_limits(env_vars: Mapping[str, str], defaults: Defaults) -> AgentLimits:
    """The limits of one run of the agent whose AgentEnvVars are ``env_vars``."""
    notes: list[tuple[str, str]] = []
    timeout = _apply(RULES[TIMEOUT], env_vars.get(TIMEOUT), defaults.run_timeout_ms, defaults.run_timeout_max_ms, notes)
    memory = _apply(RULES[MEMORY], env_vars.get(MEMORY), defaults.run_memory_limit, defaults.run_memory_limit_max,
                    notes)
    calls = _apply(RULES[LLM_CALLS], env_vars.get(LLM_CALLS), defaults.max_llm_calls, defaults.max_llm_calls_max,
                   notes)
    assert timeout is not None and calls is not None  # their defaults are numbers
    return AgentLimits(run_timeout_ms=timeout, run_memory_limit=memory, max_llm_calls=calls, notes=tuple(notes))
