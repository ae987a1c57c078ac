"""Per-agent run limits (dispatcher/agentlimits.py): an agent's reserved AgentEnvVars, capped by the operator's
maxima; over the maximum is clamped, not a number is refused (the service's default), each with a JobLog line."""

from __future__ import annotations

import pytest

from dispatcher.agentlimits import AgentLimits, Defaults, agent_limits

DEFAULTS = Defaults(run_timeout_ms=3000, run_timeout_max_ms=10_000, run_memory_limit=None,
                    run_memory_limit_max=512_000_000, max_llm_calls=20, max_llm_calls_max=50)


def test_an_agent_without_its_own_limits_gets_the_services_and_no_log_line() -> None:
    assert agent_limits({"OTHER": "x"}, DEFAULTS) == AgentLimits(3000, None, 20, ())


def test_values_within_the_maxima_apply_each_with_an_info_line() -> None:
    got = agent_limits({"HUB_RUN_TIMEOUT_MS": "8000", "HUB_RUN_MEMORY_LIMIT": " 256000000 ", "HUB_MAX_LLM_CALLS": "0"},
                       DEFAULTS)
    assert (got.run_timeout_ms, got.run_memory_limit, got.max_llm_calls) == (8000, 256_000_000, 0)
    assert [level for level, _ in got.notes] == ["info", "info", "info"]
    assert got.notes[0][1] == "HUB_RUN_TIMEOUT_MS=8000: this run gets 8000 ms"


def test_a_value_over_the_operators_maximum_is_clamped_to_it_with_a_warning_naming_both() -> None:
    got = agent_limits({"HUB_RUN_TIMEOUT_MS": "60000", "HUB_MAX_LLM_CALLS": "1000"}, DEFAULTS)
    assert (got.run_timeout_ms, got.max_llm_calls) == (10_000, 50)
    assert got.notes == (
        ("warning", "HUB_RUN_TIMEOUT_MS=60000 clamped: over the operator's maximum 10000 ms (AGENT_RUN_TIMEOUT_MAX_MS); "
                    "this run gets 10000 ms"),
        ("warning", "HUB_MAX_LLM_CALLS=1000 clamped: over the operator's maximum 50 calls (HUB_MAX_LLM_CALLS_MAX); "
                    "this run gets 50 calls"),
    )


@pytest.mark.parametrize("raw", ["soon", "", "8000ms", "1e4", "0", "-5", "8000.5"])
def test_a_timeout_that_is_not_a_whole_number_from_1_is_refused_and_the_default_applies(raw: str) -> None:
    got = agent_limits({"HUB_RUN_TIMEOUT_MS": raw}, DEFAULTS)
    assert got.run_timeout_ms == 3000
    assert got.notes == (("warning", f"HUB_RUN_TIMEOUT_MS={raw!r} refused: not a whole number of ms from 1; this run "
                                     "gets the service's 3000 ms (AGENT_RUN_TIMEOUT_MS)"),)


def test_a_refused_memory_limit_falls_back_to_pistons_default_and_says_so() -> None:
    got = agent_limits({"HUB_RUN_MEMORY_LIMIT": "lots"}, DEFAULTS)
    assert got.run_memory_limit is None
    assert "this run gets the service's Piston's default (AGENT_RUN_MEMORY_LIMIT)" in got.notes[0][1]


def test_without_an_operators_memory_maximum_any_memory_limit_applies() -> None:
    no_max = Defaults(3000, 10_000, None, None, 20, 50)
    assert agent_limits({"HUB_RUN_MEMORY_LIMIT": "99000000000"}, no_max).run_memory_limit == 99_000_000_000
