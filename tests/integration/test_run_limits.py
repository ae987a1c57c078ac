"""Run limits through the runner, on real Postgres, with the scripted sandbox (it records the limits it was
asked for): an agent's own HUB_RUN_TIMEOUT_MS / HUB_RUN_MEMORY_LIMIT / HUB_MAX_LLM_CALLS within the operator's
maxima, clamped over them, refused when not a number, each said in the Job's log; a Piston server that lowers
a run's limits; a run moved to another server of a pool (SandboxFailover) without a retry."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import replace

from dispatcher.sandbox.port import RunLimits, RunResult, SandboxFailover, SandboxRequest
from dispatcher.sandbox.scripted import Box, Call, Hang, Reply, ScriptedSandbox, Step
from tests.fakegemini_proc import FakeGemini
from tests.integration import test_runner
from tests.integration.test_runner import KEY, Harness, message

harness = test_runner.harness  # the runner tests' fixtures, shared
gemini = test_runner.gemini

MAXIMA = {"AGENT_RUN_TIMEOUT_MS": "3000", "AGENT_RUN_TIMEOUT_MAX_MS": "20000",
          "AGENT_RUN_MEMORY_LIMIT_MAX": "500000000"}


def asked(h: Harness) -> RunLimits:
    [box] = h.sandbox.runs
    return box.limits


def say_done(box: Box) -> list[Step]:
    return [message("done")]


def test_an_agents_own_limits_within_the_maxima_are_what_the_sandbox_is_asked(harness: Callable[..., Harness]) -> None:
    h = harness(say_done, **MAXIMA)
    ran = h.run(h.world(env={"HUB_RUN_TIMEOUT_MS": "8000", "HUB_RUN_MEMORY_LIMIT": "256000000"}))
    assert ran.label == "succeeded"
    assert asked(h) == RunLimits(run_timeout_ms=8000, run_memory_limit=256_000_000)
    assert "HUB_RUN_TIMEOUT_MS=8000: this run gets 8000 ms" in ran.logs  # a setting, not a secret: not masked
    assert "HUB_RUN_MEMORY_LIMIT=256000000: this run gets 256000000 bytes" in ran.logs


def test_an_agent_asking_over_the_operators_maximum_runs_at_the_maximum_and_its_log_says_so(
    harness: Callable[..., Harness]
) -> None:
    h = harness(say_done, **MAXIMA)
    ran = h.run(h.world(env={"HUB_RUN_TIMEOUT_MS": "60000", "HUB_RUN_MEMORY_LIMIT": "9000000000"}))
    assert asked(h) == RunLimits(run_timeout_ms=20_000, run_memory_limit=500_000_000)
    assert ("HUB_RUN_TIMEOUT_MS=60000 clamped: over the operator's maximum 20000 ms (AGENT_RUN_TIMEOUT_MAX_MS); "
            "this run gets 20000 ms") in ran.logs
    assert any(line.startswith("HUB_RUN_MEMORY_LIMIT=9000000000 clamped") for line in ran.logs)


def test_an_agents_limit_that_is_not_a_number_is_refused_and_the_run_gets_the_services(
    harness: Callable[..., Harness]
) -> None:
    h = harness(say_done, **MAXIMA)
    ran = h.run(h.world(env={"HUB_RUN_TIMEOUT_MS": "a minute"}))
    assert ran.label == "succeeded"
    assert asked(h).run_timeout_ms == 3000
    assert ("HUB_RUN_TIMEOUT_MS='a minute' refused: not a whole number of ms from 1; this run gets the service's "
            "3000 ms (AGENT_RUN_TIMEOUT_MS)") in ran.logs


def test_an_agents_own_llm_call_cap_applies_to_its_runs(harness: Callable[..., Harness], gemini: FakeGemini) -> None:
    answers: list[Reply] = []

    def script(box: Box) -> Generator[Step, Reply, None]:
        answers.append((yield Call("call_llm", {"prompt": "one"})))
        answers.append((yield Call("call_llm", {"prompt": "two"})))

    h = harness(script, GEMINI_API_KEY=KEY, GEMINI_BASE_URL=gemini.url, HUB_MAX_LLM_CALLS="5")
    ran = h.run(h.world(env={"HUB_MAX_LLM_CALLS": "1"}))
    first, second = answers
    assert first is not None and first["ok"]
    assert second is not None and (second["ok"], second["error"]["kind"]) == (False, "limit")
    assert "llm call refused: over HUB_MAX_LLM_CALLS (1) for this run" in ran.logs


class Lowering:
    """A sandbox server that allows less time than asked (as a Piston server with a lower PISTON_RUN_TIMEOUT
    does once the client learned it): it runs at its limit and says so in the result."""

    def __init__(self, inner: ScriptedSandbox, limit_ms: int) -> None:
        self.inner, self.limit = inner, RunLimits(run_timeout_ms=limit_ms)

    def run(self, request: SandboxRequest) -> RunResult:
        result = self.inner.run(replace(request, limits=self.limit))
        return replace(result, limits=self.limit, server="http://small:2000")


def test_a_run_the_server_lowered_is_logged_and_its_time_out_names_the_limit_it_really_had(
    harness: Callable[..., Harness]
) -> None:
    h = harness(lambda box: [Hang()], AGENT_RUN_TIMEOUT_MS="60000")
    h.runner.sandbox.sandbox = Lowering(h.sandbox, 300)
    ran = h.run(h.world())
    assert ran.job["errorMessage"] == "timed out after 0.3 s"
    assert ("Piston server http://small:2000 allows less than this run asked: it ran with 300 ms, Piston's default "
            "memory (asked 60000 ms, Piston's default memory)") in ran.logs


class FailsOverOnce:
    """A pool whose first server fails mid-run (after relaying a message), the run then going to the second."""

    def __init__(self, inner: ScriptedSandbox) -> None:
        self.inner, self.tries = inner, 0

    def run(self, request: SandboxRequest) -> RunResult:
        self.tries += 1
        result = self.inner.run(request)
        if self.tries == 1:
            raise SandboxFailover("Piston server http://a:2000 failed (connection dropped)", started=True,
                                  next_server="http://b:2000")
        return result


def test_a_run_moved_to_another_server_goes_again_at_once_without_a_retry_or_a_duplicate_message(
    harness: Callable[..., Harness]
) -> None:
    h = harness(lambda box: [message("hello once")], PISTON_RETRY_ATTEMPTS="1")  # no retry to spend
    pool = FailsOverOnce(h.sandbox)
    h.runner.sandbox.sandbox = pool
    ran = h.run(h.world())
    assert (ran.label, pool.tries) == ("succeeded", 2)
    assert ran.messages == ["hello once"]  # the second try's message 1 is the first's: same id
    assert ("Piston server http://a:2000 failed (connection dropped); the run goes to http://b:2000 at once"
            in ran.logs)
    assert not any("retrying" in line for line in ran.logs)
