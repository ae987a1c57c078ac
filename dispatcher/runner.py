"""One attempt of one invocation: context → bundle → Piston → write-back → outcome."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from core import metrics
from core.db import Pool, run_with_retry
from core.sqlfiles import query
from dispatcher import bundle, context, protocol
from dispatcher.agentfiles import AgentFilesError, load_sources
from dispatcher.claim import Claimed, release
from dispatcher.config import DispatcherConfig
from dispatcher.piston import (
    PistonClient,
    PistonError,
    PistonRefused,
    PistonTransient,
    PistonUnsupported,
    RunLimits,
    RunResult,
    RunStatus,
    StdinWriter,
    Transport,
    retrying,
)
from dispatcher.redact import Redactor
from dispatcher.states import Disposition, OutboxStatus, Outcome, StopReason, claim_outcome_for_job, next_attempt_delay_s
from dispatcher.writeback import WriteBack

log = structlog.get_logger("dispatcher.run")

MAX_PROTOCOL_WARNINGS = 20  # JobLog lines for malformed protocol lines, per run
TAIL_CHARS = 2000           # stdout/stderr tails kept in the result and JobLog


@dataclass
class RunControl:
    """Shared between a run and the dispatcher's heartbeat/shutdown: why (if) to stop."""

    reason: StopReason | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self, reason: StopReason) -> None:
        with self.lock:
            if self.reason is None:
                self.reason = reason

    def should_stop(self) -> bool:
        return self.reason is not None


def line_limit(cfg: DispatcherConfig) -> int:
    """Longest protocol line accepted: protocol lines are ASCII with \\uXXXX escapes, so a message of
    non-BMP characters takes up to 12 characters per character, plus the JSON envelope."""
    return 12 * cfg.max_message_chars + 4096


def _last_line(text: str) -> str:
    for line in reversed(text.strip().splitlines()):
        if line.strip():
            return protocol.clean_text(line.strip()[:300])  # it becomes Job.errorMessage: no NUL
    return ""


def _sigkill_hint(limits: RunLimits) -> str:
    if limits.run_memory_limit is not None:
        return f" (killed, most likely over the memory limit of {limits.run_memory_limit} bytes: AGENT_RUN_MEMORY_LIMIT)"
    return " (killed by the sandbox, most likely for going over its memory limit)"


def _failure_text(result: RunResult, limits: RunLimits, max_output_chars: int) -> str | None:
    """The Job's errorMessage for a finished run, or None when it succeeded. Every status handled."""
    match result.status:
        case RunStatus.OK:
            return None
        case RunStatus.RE:
            last = _last_line(result.stderr_tail)
            base = f"agent exited with status {result.code}"
            if result.code == 128 + 9:  # bash reports a SIGKILLed python as 137: the sandbox's OOM killer
                base += _sigkill_hint(limits)
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


class Runner:
    def __init__(self, cfg: DispatcherConfig, pool: Pool, client: PistonClient) -> None:
        self.cfg = cfg
        self.pool = pool
        self.client = client

    def transport(self) -> Transport:
        return Transport(self.cfg.piston_transport)

    def _job_status_now(self, job_id: str) -> str | None:
        row = run_with_retry(self.pool, lambda c: c.execute(query("dispatcher/job_status"), {"job_id": job_id}).fetchone(),
                             retry_s=60.0)
        return row["status"] if row else None

    def attempt(self, row: Claimed, wb: WriteBack, control: RunControl) -> Outcome:
        """Run one attempt; never raises for agent or Piston faults (they become outcomes)."""
        if not row.job_started:
            early = claim_outcome_for_job(self._job_status_now(row.job_id))
            if early is not None:
                return early
        # The hub must know the transport really used: call_llm/call_agent only work over the WebSocket.
        transport = self.client.resolve(self.transport())
        try:
            ctx = context.load(self.pool, row, transport=transport.value, history_limit=self.cfg.history_max_messages)
        except context.AgentGone as exc:
            return Outcome.finish(OutboxStatus.FAILED, str(exc))
        redact = Redactor(ctx.context["env_vars"].values())
        try:
            sources = load_sources(
                ctx.files,
                files_root=self.cfg.agent_files_root,
                max_files=self.cfg.agent_files_max_count,
                max_total_bytes=self.cfg.agent_files_max_bytes,
                http_timeout_s=self.cfg.agent_files_http_timeout_s,
            )
            # The hub checks these itself, so an over-long message fails in the agent, not silently here.
            ctx.context["limits"] = {"max_line_chars": line_limit(self.cfg), "max_message_chars": self.cfg.max_message_chars}
            built = self._bundle(ctx, sources, transport)
        except (AgentFilesError, bundle.BundleError) as exc:
            return Outcome.finish(OutboxStatus.FAILED, redact(str(exc)))
        if ctx.history_total > built.history_kept:
            wb.log("info", f"chat history windowed: the agent sees the newest {built.history_kept} of "
                           f"{ctx.history_total} messages ({self._window_causes(ctx, built)})")
        wb.log("info", f"run started: attempt {row.attempts} of {row.max_attempts}, entrypoint {built.entry}, "
                       f"transport {transport.value}")
        limits = RunLimits(run_timeout_ms=self.cfg.run_timeout_ms, run_memory_limit=self.cfg.run_memory_limit)
        started = time.monotonic()
        stats: dict[str, Any] = {}
        try:
            for attempt in retrying(self.cfg.piston_retry_attempts, self.cfg.piston_retry_base_s, self.cfg.piston_retry_max_s):
                with attempt:
                    n = attempt.retry_state.attempt_number
                    if n > 1:
                        metrics.PISTON_RETRIES.inc()
                        wb.log("warning", f"Piston unavailable, retrying (try {n} of {self.cfg.piston_retry_attempts})")
                    try:
                        result, stats = self._run_in_piston(ctx, built, limits, wb, control, redact, transport)
                    except PistonUnsupported:
                        if self.transport() is not Transport.AUTO:
                            raise
                        # No WebSocket endpoint (refused at the handshake, before anything ran): rebuild
                        # the bundle for the batch transport and run that, now and for later runs.
                        self.client.prefer_execute()
                        transport = Transport.EXECUTE
                        wb.log("warning", "Piston has no WebSocket endpoint; using the batch /execute transport")
                        built = self._bundle(ctx, sources, transport)
                        result, stats = self._run_in_piston(ctx, built, limits, wb, control, redact, transport)
        except PistonRefused as exc:
            metrics.piston_error("refused")
            return Outcome.finish(OutboxStatus.FAILED, redact(f"Piston refused the run: {exc.message}"))
        except PistonTransient as exc:
            metrics.piston_error("transient")
            return Outcome.retry_later(f"Piston unavailable: {exc}")
        except PistonError as exc:
            metrics.piston_error("error")
            return Outcome.finish(OutboxStatus.FAILED, redact(f"Piston error: {exc}"))
        return self._outcome(result, stats, limits, control, wb, redact, time.monotonic() - started)

    def _window_causes(self, ctx: context.AgentContext, built: bundle.BuiltBundle) -> str:
        """What cut the history: the newest HISTORY_MAX_MESSAGES read, and/or the bundle's size limit."""
        loaded = len(ctx.context["chat_history"])
        causes: list[str] = []
        if ctx.history_total > loaded:
            causes.append(f"HISTORY_MAX_MESSAGES is {self.cfg.history_max_messages}")
        if loaded > built.history_kept:
            causes.append(f"Piston's request limit is {self.cfg.piston_max_body_bytes} bytes")
        return "; ".join(causes)

    def _bundle(self, ctx: context.AgentContext, sources: list[bundle.AgentSource], transport: Transport) -> bundle.BuiltBundle:
        ctx.context["transport"] = transport.value
        return bundle.build_files(ctx.context, sources, max_body_bytes=self.cfg.piston_max_body_bytes)

    def _run_in_piston(
        self,
        ctx: context.AgentContext,
        built: bundle.BuiltBundle,
        limits: RunLimits,
        wb: WriteBack,
        control: RunControl,
        redact: Redactor,
        transport: Transport,
    ) -> tuple[RunResult, dict[str, Any]]:
        """One Piston run. Message sequence numbers restart at 1 on every try, so the
        messages a failed try already wrote are recognised (same ids) and not duplicated."""
        cfg = self.cfg
        decoder = protocol.StreamDecoder(
            ctx.nonce,
            max_line_chars=line_limit(cfg),
            max_output_chars=TAIL_CHARS * 4,
            max_message_chars=cfg.max_message_chars,
        )
        stats: dict[str, Any] = {"messages": 0, "messages_new": 0, "protocol_errors": 0, "user_vars": 0, "llm_calls": 0}
        from dispatcher.calls import CallRouter  # here: calls imports this module

        router = CallRouter(self, ctx.context, wb, control, deadline=time.monotonic() + limits.run_timeout_ms / 1000,
                            stats=stats)

        def handle(events: list[protocol.Event], stdin: StdinWriter | None) -> None:
            for ev in events:
                if control.should_stop():
                    return
                match ev:
                    case protocol.Message(content=content):
                        stats["messages"] += 1
                        if stats["messages"] > cfg.max_messages:
                            control.stop(StopReason.MESSAGE_CAP)
                            return
                        if wb.message(stats["messages"], content):
                            stats["messages_new"] += 1
                    case protocol.Progress(percent=percent, message=message):
                        wb.progress(percent, None if message is None else redact(message))
                    case protocol.SetUserVar(key=key, value=value):
                        stats["user_vars"] += 1
                        if not wb.user_var(key, value):
                            wb.log("warning", f"set_user_var({key!r}) ignored: this invocation has no session")
                    case protocol.Log(level=level, message=message):
                        wb.log(level, redact.head(f"agent: {message}", 4000))
                    case protocol.Call() as call:
                        if stdin is not None:  # None: the run is over, nobody waits for a reply
                            stdin.write(router.handle(call))
                    case protocol.ProtocolError(reason=reason, call_id=call_id):
                        stats["protocol_errors"] += 1
                        if call_id is not None and stdin is not None:
                            # The agent is blocked on this call: answer it, or it waits until its time limit.
                            stdin.write(protocol.encode_reply(
                                call_id, False, error={"kind": "invalid_request", "message": reason}))
                        if stats["protocol_errors"] <= MAX_PROTOCOL_WARNINGS:
                            wb.log("warning", redact(f"ignored a malformed hub line: {reason}"))

        def on_stdout(chunk: str, stdin: StdinWriter) -> None:
            handle(decoder.feed(chunk), stdin)

        result = self.client.run(
            built.files,
            limits,
            transport=transport,
            on_stdout=on_stdout,
            should_stop=control.should_stop,
        )
        handle(decoder.close(), None)
        stats["output_tail"] = redact.tail(decoder.output, TAIL_CHARS)
        stats["output_truncated"] = decoder.output_truncated
        return result, stats

    def _outcome(
        self,
        result: RunResult,
        stats: dict[str, Any],
        limits: RunLimits,
        control: RunControl,
        wb: WriteBack,
        redact: Redactor,
        elapsed_s: float,
    ) -> Outcome:
        # clean_text: an agent may write NUL or invalid UTF-8 to stderr, which Postgres cannot store.
        # Redacted before any cut (the errorMessage takes its last line), so no fragment of a secret is kept.
        result = replace(result, stderr_tail=redact.tail(protocol.clean_text(result.stderr_tail), TAIL_CHARS))
        stderr_tail = result.stderr_tail
        summary: dict[str, Any] = {
            "messages": min(stats.get("messages", 0), self.cfg.max_messages),
            "status": result.status.value,
            "exit_code": result.code,
            "signal": result.signal,
            "wall_ms": result.wall_ms,
            "cpu_ms": result.cpu_ms,
            "memory_bytes": result.memory_bytes,
            "transport": result.transport.value,
            "protocol_errors": stats.get("protocol_errors", 0),
            "output_truncated": stats.get("output_truncated", False),
            "elapsed_s": round(elapsed_s, 3),
        }
        for key in ("llm", "agent_calls"):  # hub.call_llm token usage / hub.call_agent count (dispatcher/calls.py)
            if key in stats:
                summary[key] = stats[key]
        if stderr_tail.strip():
            wb.log("info", f"stderr (last {TAIL_CHARS} characters):\n{stderr_tail}")
        if stats.get("output_tail", "").strip():
            wb.log("info", f"output (last {TAIL_CHARS} characters):\n{stats['output_tail']}")
        match control.reason:
            case StopReason.CANCELLED:
                return Outcome.finish(OutboxStatus.CANCELLED, None, summary)
            case StopReason.LEASE_LOST:
                return Outcome.abandon()
            case StopReason.SHUTDOWN:
                return Outcome.release()
            case StopReason.MESSAGE_CAP:
                return Outcome.finish(
                    OutboxStatus.FAILED,
                    f"agent sent more than {self.cfg.max_messages} messages (MAX_MESSAGES_PER_RUN)",
                    summary,
                )
            case None:
                error = _failure_text(result, limits, self.cfg.max_output_chars)
                if error is None:
                    return Outcome.finish(OutboxStatus.SUCCEEDED, None, summary)
                return Outcome.finish(OutboxStatus.FAILED, redact(error), summary)


def apply_outcome(outcome: Outcome, row: Claimed, wb: WriteBack, *, cfg: DispatcherConfig, pool: Pool) -> str:
    """Write the outcome; returns the final label for logs and metrics. Every disposition handled."""
    result = {**outcome.result, "attempts": row.attempts}
    match outcome.disposition:
        case Disposition.FINISH:
            assert outcome.status is not None
            status_message = {
                OutboxStatus.SUCCEEDED: "completed",
                OutboxStatus.FAILED: "failed",
                OutboxStatus.CANCELLED: "cancelled",
            }[outcome.status]
            # The last log lines ride in the finish's transaction: one round trip and one commit, not three.
            logs = [("error", outcome.error)] if outcome.error else []
            logs.append(("info", f"run finished: {outcome.status.value}"))
            ok = wb.finish(outcome.status, error=outcome.error, result=result, status_message=status_message, logs=logs)
            return outcome.status.value if ok else "lease_lost"
        case Disposition.RETRY_LATER:
            error = outcome.error or "transient fault"
            if row.attempts >= row.max_attempts:
                final = f"{error} (gave up after {row.attempts} attempts)"
                ok = wb.finish(OutboxStatus.FAILED, error=final, result=result, status_message="failed", logs=[("error", final)])
                return "failed" if ok else "lease_lost"
            delay = round(next_attempt_delay_s(row.attempts, cfg.retry_delay_s, cfg.retry_max_delay_s), 3)
            wb.log("warning", f"{error}; will retry in {delay:g} s (attempt {row.attempts} of {row.max_attempts})")
            ok = wb.retry_later(delay_s=delay, error=error, status_message=f"waiting to retry: {error}")
            return "retry_later" if ok else "lease_lost"
        case Disposition.RELEASE:
            wb.log("warning", "run interrupted by dispatcher shutdown; released for another dispatcher")
            release(pool, owner=cfg.owner, ids=[row.id], events=wb.events)
            return "released"
        case Disposition.ABANDON:
            return "lease_lost"
