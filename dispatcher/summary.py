"""How a finished run reads: the Job's errorMessage for each status, and the outbox row's result summary."""

from __future__ import annotations

from typing import Any

from dispatcher import protocol
from dispatcher.runstats import RunStats
from dispatcher.sandbox.port import RunLimits, RunResult, RunStatus

TAIL_CHARS = 2000  # stdout/stderr tails kept in the result and JobLog


def last_line(text: str) -> str:
    for line in reversed(text.strip().splitlines()):
        if line.strip():
            return protocol.clean_text(line.strip()[:300])  # it becomes Job.errorMessage: no NUL
    return ""


def sigkill_hint(limits: RunLimits) -> str:
    if limits.run_memory_limit is not None:
        return f" (killed, most likely over the memory limit of {limits.run_memory_limit} bytes: AGENT_RUN_MEMORY_LIMIT)"
    return " (killed by the sandbox, most likely for going over its memory limit)"


def failure_text(result: RunResult, limits: RunLimits, max_output_chars: int) -> str | None:
    """The Job's errorMessage for a finished run, or None when it succeeded. Every status handled."""
    match result.status:
        case RunStatus.OK:
            return None
        case RunStatus.RE:
            last = last_line(result.stderr_tail)
            base = f"agent exited with status {result.code}"
            if result.code == 128 + 9:  # bash reports a SIGKILLed python as 137: the sandbox's OOM killer
                base += sigkill_hint(limits)
            return f"{base}: {last}" if last else base
        case RunStatus.TO:
            return f"timed out after {limits.run_timeout_ms / 1000:g} s"
        case RunStatus.OL:
            return ("stdout went over Piston's output limit (PISTON_OUTPUT_MAX_SIZE, 1024 characters by default) "
                    "on the batch transport; raise it on the Piston server or use PISTON_TRANSPORT=ws")
        case RunStatus.EL:
            return ("stderr went over Piston's output limit (PISTON_OUTPUT_MAX_SIZE, 1024 characters by default); "
                    "raise it on the Piston server or use PISTON_TRANSPORT=ws")
        case RunStatus.SG:
            # A SIGKILL of the whole box (no bash left to report 137) is the sandbox's CPU-time or memory limit.
            hint = " (killed by the sandbox: over its CPU-time or memory limit)" if result.signal == "SIGKILL" else ""
            return f"agent killed by signal {result.signal}{hint}"
        case RunStatus.XX:
            return f"sandbox error: {result.message or 'unknown'}"
        case RunStatus.CAPPED:
            return f"agent output went over the dispatcher's limit of {max_output_chars} characters (MAX_OUTPUT_CHARS)"
        case RunStatus.STOPPED:
            return "run stopped"


def result_summary(result: RunResult, stats: RunStats, *, max_messages: int, elapsed_s: float) -> dict[str, Any]:
    """The outbox row's ``result``: what ran, how, and what it did (no agent output)."""
    summary: dict[str, Any] = {
        "messages": min(stats.messages, max_messages),
        "status": result.status.value,
        "exit_code": result.code,
        "signal": result.signal,
        "wall_ms": result.wall_ms,
        "cpu_ms": result.cpu_ms,
        "memory_bytes": result.memory_bytes,
        "transport": result.transport.value,
        "protocol_errors": stats.protocol_errors,
        "output_truncated": stats.output_truncated,
        "elapsed_s": round(elapsed_s, 3),
    }
    if stats.llm is not None:  # hub.call_llm token usage (dispatcher/llmcalls.py)
        summary["llm"] = stats.llm.as_dict()
    if stats.agent_calls:  # hub.call_agent count (dispatcher/children.py)
        summary["agent_calls"] = stats.agent_calls
    if stats.http is not None:  # hub.http calls and bytes (dispatcher/httpcalls.py)
        summary["http"] = dict(stats.http.stats)
    return summary
