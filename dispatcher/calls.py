"""Answering the sandbox's ``call`` lines (hub.call_llm, hub.call_agent) with reply lines for its stdin.

The runner makes one ``CallRouter`` per Piston run and hands it every ``protocol.Call``. Calls are
answered in the run's own thread, in order: the agent is blocked on its call anyway, and a child
invocation must run while its caller's lease is still being renewed by the dispatcher.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from core import metrics
from dispatcher import children, llm, protocol
from dispatcher.protocol import CallMethod
from dispatcher.redact import Redactor
from dispatcher.runner import RunControl, Runner
from dispatcher.writeback import WriteBack

log = structlog.get_logger("dispatcher.calls")


def error_reply(call_id: int, kind: str, message: str) -> str:
    return protocol.encode_reply(call_id, False, error={"kind": kind, "message": message})


def empty_llm_stats() -> dict[str, Any]:
    return {"calls": 0, "failed": 0, "prompt_tokens": 0, "output_tokens": 0, "total_tokens": 0, "latency_ms": 0,
            "models": {}, "per_call": []}


class CallRouter:
    def __init__(
        self,
        runner: Runner,
        context: dict[str, Any],
        wb: WriteBack,
        control: RunControl,
        *,
        deadline: float,
        stats: dict[str, Any],
    ) -> None:
        self.runner = runner
        self.cfg = runner.cfg
        self.context = context
        self.wb = wb
        self.deadline = deadline  # time.monotonic() at which this run's time limit is reached
        self.stats = stats        # the run's stats: "llm" and "agent_calls" end up in the outbox row's result
        self.llm_calls = 0
        # An error text may quote the request, i.e. the agent's own data: mask its secrets like every JobLog line.
        self.redact = Redactor(dict(context.get("env_vars") or {}).values())
        self.caller = children.Caller(
            runner=runner,
            outbox_id=wb.outbox_id,
            job_id=str(context["job_id"]),
            agent_id=str(context["agent"]["id"]),
            user_id=str(context["user_id"]),
            control=control,
            deadline=deadline,
        )

    def handle(self, call: protocol.Call) -> str:
        """The reply line for ``call``; never raises for a failed call (the agent gets an error reply)."""
        try:
            match call.method:
                case CallMethod.CALL_LLM:
                    return self.call_llm(call)
                case CallMethod.CALL_AGENT:
                    return self.call_agent(call)
                case _:
                    return error_reply(call.id, "invalid_request", f"unknown method {str(call.method)[:40]!r}")
        except Exception as exc:
            log.exception("call_failed", method=str(call.method))
            return error_reply(call.id, "internal", f"the hub failed to answer {call.method}: {type(exc).__name__}")

    # --- call_llm --------------------------------------------------------------------------

    def _record(self, record: llm.CallRecord) -> None:
        metrics.llm_call(record.model, "ok" if record.ok else str(record.kind),
                         prompt_tokens=record.usage.prompt_tokens, output_tokens=record.usage.output_tokens)
        s = self.stats.setdefault("llm", empty_llm_stats())
        s["calls"] += 1
        s["failed"] += 0 if record.ok else 1
        s["prompt_tokens"] += record.usage.prompt_tokens
        s["output_tokens"] += record.usage.output_tokens
        s["total_tokens"] += record.usage.total_tokens
        s["latency_ms"] += record.latency_ms
        s["models"][record.model] = s["models"].get(record.model, 0) + 1
        s["per_call"].append({
            "model": record.model, "ok": record.ok, "kind": record.kind, "tries": record.tries,
            "latency_ms": record.latency_ms, "prompt_tokens": record.usage.prompt_tokens,
            "output_tokens": record.usage.output_tokens, "total_tokens": record.usage.total_tokens,
        })
        self.stats["llm_calls"] = s["calls"]
        u = record.usage
        outcome = "ok" if record.ok else f"failed ({record.kind})"
        self.wb.log("info" if record.ok else "warning",
                    f"llm call {s['calls']}: {record.model} {outcome}, tokens {u.prompt_tokens} prompt + "
                    f"{u.output_tokens} output = {u.total_tokens}, {record.latency_ms} ms, {record.tries} "
                    f"tr{'y' if record.tries == 1 else 'ies'}")

    def call_llm(self, call: protocol.Call) -> str:
        self.llm_calls += 1
        n = self.llm_calls
        if n > self.cfg.max_llm_calls:
            if n == self.cfg.max_llm_calls + 1:
                self.wb.log("warning", f"llm call refused: over HUB_MAX_LLM_CALLS ({self.cfg.max_llm_calls}) for this run")
            return error_reply(call.id, llm.LLMErrorKind.LIMIT.value,
                               f"this run may make at most {self.cfg.max_llm_calls} call_llm calls (HUB_MAX_LLM_CALLS)")
        try:
            req = llm.parse_request(call.params, chat_history=list(self.context.get("chat_history") or []),
                                    default_model=self.cfg.llm_model, max_prompt_chars=self.cfg.max_message_chars)
        except llm.LLMFailure as exc:
            return error_reply(call.id, exc.kind.value, exc.message)
        client = llm.client_for(self.cfg)

        def on_retry(tries: int, exc: llm.LLMFailure) -> None:
            self.wb.log("warning", f"llm call {n}: {exc.kind.value} ({self.redact.head(exc.message, 200)}); retrying "
                                   f"(try {tries + 1} of at most {self.cfg.llm_retry_attempts})")

        started = time.monotonic()
        try:
            answer, tries = client.generate(req, deadline=self.deadline, on_retry=on_retry)
        except llm.LLMFailure as exc:
            latency = int((time.monotonic() - started) * 1000)
            self._record(llm.CallRecord(req.model, False, exc.kind.value, exc.usage or llm.Usage(), latency, exc.tries))
            log.info("llm_call", ok=False, kind=exc.kind.value, model=req.model, tries=exc.tries, latency_ms=latency)
            return error_reply(call.id, exc.kind.value, exc.message)
        latency = int((time.monotonic() - started) * 1000)
        self._record(llm.CallRecord(req.model, True, None, answer.usage, latency, tries))
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

    # --- call_agent ------------------------------------------------------------------------

    def call_agent(self, call: protocol.Call) -> str:
        agent_id = call.params.get("agent_id")
        if not isinstance(agent_id, str) or not agent_id:
            return error_reply(call.id, "bad_request", "agent_id must be a non-empty str")
        if "input" not in call.params:
            return error_reply(call.id, "bad_request", "input is missing")
        prompt_len = len(children.child_prompt(call.params["input"]))
        if prompt_len > self.cfg.max_message_chars:
            return error_reply(call.id, "bad_request",
                               f"input is {prompt_len} characters as text, over the limit of {self.cfg.max_message_chars}")
        self.stats["agent_calls"] = self.stats.get("agent_calls", 0) + 1
        result = children.run_child(self.caller, agent_id, call.params["input"], self.wb)
        if "job_id" not in result:  # refused before a child existed: say so in the caller's log
            self.wb.log("warning", result["error"])
        return protocol.encode_reply(call.id, True, result=result)
