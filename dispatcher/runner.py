"""One attempt of one invocation, top to bottom: context → box → sandbox, its events relayed as they
come → the outcome, as a value. Writing the outcome is the completer's (dispatcher/completer.py).

The runner never raises for an agent's or the sandbox's faults: they become outcomes. The calls an
agent makes back (call_llm, call_agent) are answered by the handlers the worker routed into ``calls``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import structlog

from core import metrics
from core.db import Pool
from dispatcher import agentlimits, bundle, context, protocol
from dispatcher.agentfiles import AgentFilesError, load_sources
from dispatcher.calls import CallRouter, CallScope
from dispatcher.claim import Claimed
from dispatcher.config import DispatcherConfig
from dispatcher.control import RunControl, StopReason
from dispatcher.outcome import Outcome, claim_outcome_for_job
from dispatcher.relay import EventRelay, RelayLimits, line_limit
from dispatcher.runstats import RunStats
from dispatcher.sandbox.auto import AutoTransport
from dispatcher.sandbox.port import (
    File,
    RunLimits,
    RunResult,
    Sandbox,
    SandboxError,
    SandboxFailover,
    SandboxRefused,
    SandboxRequest,
    SandboxTransient,
    Transport,
)
from dispatcher.sandbox.retry import retrying
from dispatcher.states import OutboxStatus
from dispatcher.summary import TAIL_CHARS, failure_text, result_summary
from dispatcher.writeback import WriteBack
from hubpy.hub._redact import Redactor

log = structlog.get_logger("dispatcher.run")

FALLBACK_LOG = "Piston has no WebSocket endpoint; using the batch /execute transport"
MAX_FAILOVERS = 8  # per try: a run moved to another Piston server this often in a row counts as a failed try

Box = Callable[[Transport], bundle.BuiltBundle]  # a run's files for the transport it goes over


LoadContext = Callable[..., context.AgentContext]  # context.load's signature


class Runner:
    def __init__(self, cfg: DispatcherConfig, pool: Pool, sandbox: Sandbox, calls: CallRouter,
                 load_context: LoadContext = context.load) -> None:
        self.cfg = cfg
        self.pool = pool
        self.load_context = load_context  # the dry run (dispatcher/dryrun.py) adds its --user-var values
        self.sandbox = AutoTransport(sandbox)  # one per process: it remembers a Piston without WebSocket
        self.calls = calls
        self.requested = Transport(cfg.piston_transport)
        self.limit_defaults = agentlimits.Defaults(
            run_timeout_ms=cfg.run_timeout_ms, run_timeout_max_ms=cfg.run_timeout_max_ms,
            run_memory_limit=cfg.run_memory_limit, run_memory_limit_max=cfg.run_memory_limit_max,
            max_llm_calls=cfg.max_llm_calls, max_llm_calls_max=cfg.max_llm_calls_max)

    def attempt(self, row: Claimed, wb: WriteBack, control: RunControl, *, time_limit_ms: int | None = None) -> Outcome:
        """Run one attempt. ``time_limit_ms``: a call_agent child's share of its caller's time (the agent's own
        HUB_RUN_TIMEOUT_MS or the service's AGENT_RUN_TIMEOUT_MS when lower)."""
        if not row.job_started:
            early = claim_outcome_for_job(context.job_status(self.pool, row.job_id))
            if early is not None:
                return early
        # The hub must know the transport really used: call_llm/call_agent only work over the WebSocket.
        transport = self.sandbox.resolve(self.requested)
        try:
            ctx = self.load_context(self.pool, row, transport=transport.value, history_limit=self.cfg.history_max_messages)
        except context.AgentGone as exc:
            return Outcome.finish(OutboxStatus.FAILED, str(exc))
        redact = ctx.redactor()
        own = agentlimits.agent_limits(ctx.context["env_vars"], self.limit_defaults)
        try:
            sources = load_sources(
                ctx.files,
                files_root=self.cfg.agent_files_root,
                max_files=self.cfg.agent_files_max_count,
                max_total_bytes=self.cfg.agent_files_max_bytes,
                http_timeout_s=self.cfg.agent_files_http_timeout_s,
            )
            box = self._box(ctx, sources)
            built = box(transport)
        except (AgentFilesError, bundle.BundleError) as exc:
            return Outcome.finish(OutboxStatus.FAILED, redact(str(exc)))
        if ctx.history_total > built.history_kept:
            wb.log("info", f"chat history windowed: the agent sees the newest {built.history_kept} of "
                           f"{ctx.history_total} messages ({self._window_causes(ctx, built)})")
        for level, note in own.notes:
            wb.log(level, note)
        wb.log("info", f"run started: attempt {row.attempts} of {row.max_attempts}, entrypoint {built.entry}, "
                       f"transport {transport.value}")
        timeout_ms = own.run_timeout_ms if time_limit_ms is None else min(own.run_timeout_ms, time_limit_ms)
        limits = RunLimits(run_timeout_ms=timeout_ms, run_memory_limit=own.run_memory_limit)
        started = time.monotonic()
        try:
            result, stats = self._run(row, ctx, box, limits, wb, control, redact, max_llm_calls=own.max_llm_calls)
        except _StoppedBeforeStart:
            assert control.reason is not None
            return self._stopped(control.reason, None)
        except SandboxRefused as exc:
            metrics.piston_error("refused")
            return Outcome.finish(OutboxStatus.FAILED, redact(f"Piston refused the run: {exc.message}"))
        except SandboxTransient as exc:
            metrics.piston_error("transient")
            return Outcome.retry_later(f"Piston unavailable: {exc}")
        except SandboxError as exc:
            metrics.piston_error("error")
            return Outcome.finish(OutboxStatus.FAILED, redact(f"Piston error: {exc}"))
        return self._conclude(result, stats, limits, control, wb, redact, time.monotonic() - started)

    def _box(self, ctx: context.AgentContext, sources: list[bundle.AgentSource]) -> Box:
        """The box's files for a transport, built once per transport: the hub inside must know which it is on."""
        # The hub checks these itself, so an over-long message fails in the agent, not silently here.
        limits = {"max_line_chars": line_limit(self.cfg.max_message_chars), "max_message_chars": self.cfg.max_message_chars}

        @functools.cache
        def build(transport: Transport) -> bundle.BuiltBundle:
            hub_context = {**ctx.context, "transport": transport.value, "limits": limits}
            return bundle.build_files(hub_context, sources, max_body_bytes=self.cfg.piston_max_body_bytes)

        return build

    def _window_causes(self, ctx: context.AgentContext, built: bundle.BuiltBundle) -> str:
        """What cut the history: the newest HISTORY_MAX_MESSAGES read, and/or the box's size limit."""
        loaded = len(ctx.context["chat_history"])
        causes: list[str] = []
        if ctx.history_total > loaded:
            causes.append(f"HISTORY_MAX_MESSAGES is {self.cfg.history_max_messages}")
        if loaded > built.history_kept:
            causes.append(f"Piston's request limit is {self.cfg.piston_max_body_bytes} bytes")
        return "; ".join(causes)

    def _run(
        self,
        row: Claimed,
        ctx: context.AgentContext,
        box: Box,
        limits: RunLimits,
        wb: WriteBack,
        control: RunControl,
        redact: Redactor,
        *,
        max_llm_calls: int,
    ) -> tuple[RunResult, RunStats]:
        """The sandbox run, with in-process retries of a transient fault. Each try relays from message 1
        again, so the messages a failed try already wrote are recognised (same ids) and not duplicated.
        A run that a pool of Piston servers moves to another server (SandboxFailover) goes again at once,
        without using a try."""
        cfg = self.cfg

        def fallback(transport: Transport) -> Sequence[File]:
            wb.log("warning", FALLBACK_LOG)
            return box(transport).files

        for attempt in retrying(cfg.piston_retry_attempts, cfg.piston_retry_base_s, cfg.piston_retry_max_s):
            with attempt:
                n = attempt.retry_state.attempt_number
                if n > 1:
                    metrics.PISTON_RETRIES.inc()
                    wb.log("warning", f"Piston unavailable, retrying (try {n} of {cfg.piston_retry_attempts})")
                for failovers in range(MAX_FAILOVERS + 1):
                    if control.should_stop():
                        # Stopped before this try could start (self-fenced while the context read waited out a
                        # Postgres outage, or during a retry's back-off): another dispatcher may hold the row by
                        # now, so the agent must not start again here (test_fencing_outage_e2e).
                        raise _StoppedBeforeStart
                    scope = CallScope(row=row, context=ctx.context, wb=wb, control=control, redact=redact,
                                      stats=RunStats(), deadline=time.monotonic() + limits.run_timeout_ms / 1000,
                                      secrets=ctx.secrets, max_llm_calls=max_llm_calls)
                    relay = EventRelay(scope, nonce=ctx.nonce, calls=self.calls,
                                       limits=RelayLimits(max_messages=cfg.max_messages,
                                                          max_message_chars=cfg.max_message_chars))
                    transport = self.sandbox.resolve(self.requested)
                    try:
                        result = self.sandbox.run(SandboxRequest(
                            files=box(transport).files,
                            limits=limits,
                            transport=transport,
                            on_stdout=relay.on_stdout,
                            should_stop=control.should_stop,
                            fallback=fallback if self.requested is Transport.AUTO else None,
                            # The hub's cancel line: a stop (cancel, lease, shutdown, cap) ends the agent's process.
                            stop_stdin=protocol.encode_control(ctx.nonce),
                            on_stop=control.on_stop,
                        ))
                    except SandboxFailover as exc:
                        if failovers == MAX_FAILOVERS:
                            raise
                        wb.log("warning", f"{exc}; the run goes to {exc.next_server} at once")
                        continue
                    return result, relay.close()
        raise AssertionError("unreachable: retrying() reraises the last failure")

    def _conclude(
        self,
        result: RunResult,
        stats: RunStats,
        limits: RunLimits,
        control: RunControl,
        wb: WriteBack,
        redact: Redactor,
        elapsed_s: float,
    ) -> Outcome:
        # clean_text: an agent may write NUL or invalid UTF-8 to stderr, which Postgres cannot store.
        # Redacted before any cut (the errorMessage takes its last line), so no fragment of a secret is kept.
        result = replace(result, stderr_tail=redact.tail(protocol.clean_text(result.stderr_tail), TAIL_CHARS))
        if result.limits is not None and result.limits != limits:
            server = f"Piston server {result.server}" if result.server else "Piston"
            wb.log("warning", f"{server} allows less than this run asked: it ran with {_limits_text(result.limits)} "
                              f"(asked {_limits_text(limits)})")
            limits = result.limits
        summary = result_summary(result, stats, max_messages=self.cfg.max_messages, elapsed_s=elapsed_s)
        if result.stderr_tail.strip():
            wb.log("info", f"stderr (last {TAIL_CHARS} characters):\n{result.stderr_tail}")
        if stats.output_tail.strip():
            wb.log("info", f"output (last {TAIL_CHARS} characters):\n{stats.output_tail}")
        if control.reason is not None:
            return self._stopped(control.reason, summary)
        error = failure_text(result, limits, self.cfg.max_output_chars)
        if error is None:
            return Outcome.finish(OutboxStatus.SUCCEEDED, None, summary)
        return Outcome.finish(OutboxStatus.FAILED, redact(error), summary)

    def _stopped(self, reason: StopReason, summary: dict[str, Any] | None) -> Outcome:
        """The outcome of a run stopped for ``reason`` (``summary``: None when its agent never started)."""
        match reason:
            case StopReason.CANCELLED:
                return Outcome.finish(OutboxStatus.CANCELLED, None, summary)
            case StopReason.LEASE_LOST:
                return Outcome.abandon()
            case StopReason.LEASE_EXPIRING:
                # Stopped by us before the lease could lapse: give the row back (fenced: only if still ours).
                return Outcome.release("run stopped: this dispatcher could not renew its lease in time (self-fenced)")
            case StopReason.SHUTDOWN:
                return Outcome.release()
            case StopReason.MESSAGE_CAP:
                return Outcome.finish(OutboxStatus.FAILED,
                                      f"agent sent more than {self.cfg.max_messages} messages (MAX_MESSAGES_PER_RUN)", summary)


class _StoppedBeforeStart(Exception):
    """The run was stopped before a try of its sandbox run could start (Runner._run to Runner.attempt)."""


def _limits_text(limits: RunLimits) -> str:
    memory = "Piston's default memory" if limits.run_memory_limit is None else f"{limits.run_memory_limit} bytes"
    return f"{limits.run_timeout_ms} ms, {memory}"
