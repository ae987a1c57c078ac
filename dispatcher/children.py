"""``hub.call_agent``: another agent run as a child invocation, inline, inside the caller's run.

The child gets its own Job (visible on the hub, with its own JobLogs and final status) and its
own outbox row (``parent_id``, ``depth``, ``agent_chain``), inserted already running and leased
to this dispatcher (dispatcher/childrows.py), and is run by the same runner as any invocation, in
the calling thread, while the caller waits for its reply; its outcome is written by the same
completer. While it runs it is one of the dispatcher's held rows (dispatcher/leases.py): the
heartbeat renews its lease and stops it when its own Job is cancelled; it also stops when its caller
stops, for the same reason (dispatcher/control.py).

Depth: a top-level invocation has depth 0, the agent it calls depth 1, and so on; a call that
would create a child deeper than ``HUB_MAX_AGENT_DEPTH`` (default 3: A→B→C→D) is refused, as is
a call to any agent already in the chain (A→B→A, or A→A). The child's time limit is what is left
of the caller's run minus ``HUB_CHILD_TIME_MARGIN_MS``, so the caller still has time to use the answer.

Piston runs the child while the caller holds its own sandbox slot: with Piston's
``max_concurrent_jobs`` at 1 (or all slots held by waiting callers) the child queues behind its
own caller and both time out. Size Piston's concurrency for the call depth you allow.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Protocol

import structlog

from core.db import Pool
from dispatcher import childrows, protocol
from dispatcher.calls import CallScope, error_reply
from dispatcher.claim import Claimed
from dispatcher.completer import apply_outcome
from dispatcher.config import DispatcherConfig
from dispatcher.control import RunControl, StopReason
from dispatcher.events import status_event
from dispatcher.leases import HeldRows
from dispatcher.outcome import Disposition, Outcome
from dispatcher.states import JobStatus, OutboxStatus
from dispatcher.writeback import WriteBack

log = structlog.get_logger("dispatcher.children")

MIN_CHILD_MS = 1000           # a child is not started with less time than this
REPLY_MAX_CHARS = 1_000_000   # the child's messages returned to the caller, newest kept


class RunAttempt(Protocol):
    """The runner's ``attempt`` (dispatcher/runner.py), which the worker hands to this handler."""

    def __call__(self, row: Claimed, wb: WriteBack, control: RunControl, *, time_limit_ms: int | None = None) -> Outcome: ...


class CollectingWriteBack(WriteBack):
    """A child has no session: its messages are kept here and returned to the caller."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: list[str] = []

    def message(self, seq: int, content: str) -> bool:
        # Sequence numbers restart at 1 when Piston is retried: a repeated seq replaces, never duplicates.
        if seq <= len(self.messages):
            self.messages[seq - 1] = content
            return False
        self.messages.append(content)
        return True


def refused(error: str) -> dict[str, Any]:
    return {"status": OutboxStatus.FAILED.value, "messages": [], "output": None, "error": error}


def child_prompt(input_data: Any) -> str:
    return input_data if isinstance(input_data, str) else json.dumps(input_data, ensure_ascii=False)


def _final(outcome: Outcome) -> Outcome:
    """Children are never retried or released (the caller is waiting now): every end is final."""
    match outcome.disposition:
        case Disposition.FINISH:
            return outcome
        case Disposition.RETRY_LATER:
            return Outcome.finish(OutboxStatus.FAILED, outcome.error or "transient fault", outcome.result)
        case Disposition.RELEASE:
            return Outcome.finish(OutboxStatus.FAILED, "the dispatcher shut down during the call", outcome.result)
        case Disposition.ABANDON:
            return Outcome.finish(OutboxStatus.FAILED, "the run lost its lease (another dispatcher took it over)", outcome.result)


def _newest(messages: list[str]) -> tuple[list[str], int]:
    """The newest messages totalling at most REPLY_MAX_CHARS, and how many older ones were left out."""
    kept: list[str] = []
    used = 0
    for text in reversed(messages):
        if used + len(text) > REPLY_MAX_CHARS:
            break
        kept.append(text)
        used += len(text)
    kept.reverse()
    return kept, len(messages) - len(kept)


class ChildAgents:
    """The call_agent handler."""

    def __init__(self, cfg: DispatcherConfig, pool: Pool, held: HeldRows, run: RunAttempt) -> None:
        self.cfg = cfg
        self.pool = pool
        self.held = held
        self.run = run

    def __call__(self, call: protocol.Call, scope: CallScope) -> str:
        agent_id = call.params.get("agent_id")
        if not isinstance(agent_id, str) or not agent_id:
            return error_reply(call.id, "bad_request", "agent_id must be a non-empty str")
        if "input" not in call.params:
            return error_reply(call.id, "bad_request", "input is missing")
        prompt = child_prompt(call.params["input"])
        if len(prompt) > self.cfg.max_message_chars:
            return error_reply(call.id, "bad_request",
                               f"input is {len(prompt)} characters as text, over the limit of {self.cfg.max_message_chars}")
        scope.stats.agent_calls += 1
        result = self.run_child(scope, agent_id, prompt)
        if "job_id" not in result:  # refused before a child existed: say so in the caller's log
            scope.wb.log("warning", result["error"])
        return protocol.encode_reply(call.id, True, result=result)

    # -- what a child's run writes: overridden by the dry run (dispatcher/dryrun.py), which writes nothing ------
    def start_child(self, new: childrows.NewChild, caller: Claimed) -> Claimed | None:
        """The child's Job and row, leased to us (None: no such agent, or the caller's run no longer holds its
        row: the insert is fenced by the caller's row)."""
        return childrows.insert_child(self.pool, new, owner=self.cfg.owner, lease_s=self.cfg.lease_s,
                                      caller_attempt=caller.attempts)

    def child_writeback(self, child: Claimed, caller_wb: WriteBack, control: RunControl) -> CollectingWriteBack:
        return CollectingWriteBack(self.pool, outbox_id=child.id, job_id=child.job_id, session_id=None,
                                   owner=self.cfg.owner, attempt=child.attempts, events=caller_wb.events,
                                   committer=caller_wb.committer, on_lost=lambda: control.stop(StopReason.LEASE_LOST),
                                   stopped=control.should_stop)

    def complete_child(self, outcome: Outcome, child: Claimed, wb: WriteBack) -> None:
        label = apply_outcome(outcome, child, wb, cfg=self.cfg, pool=self.pool)
        log.info("child_run_done", outcome=label)

    def run_child(self, scope: CallScope, agent_id: str, prompt: str) -> dict[str, Any]:
        """Run ``agent_id`` as a child of the scope's run; always returns the result dict (refusals included)."""
        cfg = self.cfg
        caller = scope.row
        here = childrows.lineage(self.pool, caller.id, caller.agent_id)
        depth = here.depth + 1
        if agent_id in here.chain:
            path = " → ".join([*here.chain, agent_id])
            return refused(f"call_agent refused: agent {agent_id} is already in the call chain ({path}); cycles are not allowed")
        if depth > cfg.max_agent_depth:
            return refused(f"call_agent refused: the child would be at depth {depth}, over HUB_MAX_AGENT_DEPTH "
                           f"({cfg.max_agent_depth})")
        left_ms = int((scope.deadline - time.monotonic()) * 1000) - cfg.child_time_margin_ms
        if left_ms < MIN_CHILD_MS:
            return refused(f"call_agent refused: not enough of the caller's run time left ({max(left_ms, 0)} ms after the "
                           f"{cfg.child_time_margin_ms} ms margin; at least {MIN_CHILD_MS} ms needed)")
        new = childrows.NewChild(agent_id=agent_id, job_id=str(uuid.uuid4()), user_id=caller.user_id, prompt=prompt,
                                 parent_id=caller.id, depth=depth, chain=[*here.chain, agent_id])
        # Renewed by the dispatcher's heartbeat from here on, like the caller's own lease.
        lease_set_at = self.held.clock()
        child = self.start_child(new, caller)
        if child is None:
            if scope.control.should_stop():
                return refused("call_agent refused: the calling run is being stopped")
            return refused(f"call_agent failed: agent {agent_id} does not exist")
        caller_wb = scope.wb
        caller_wb.announce(status_event(child.job_id, None, JobStatus.PROCESSING.value))  # committed: the insert returned
        caller_wb.log("info", f"call_agent: running agent {agent_id} as child job {child.job_id} (depth {depth}, "
                              f"time limit {left_ms} ms)")
        control = scope.control.child()
        wb = self.child_writeback(child, caller_wb, control)
        with (structlog.contextvars.bound_contextvars(child_job_id=child.job_id, child_outbox_id=child.id,
                                                      child_agent_id=agent_id),
              self.held.holding(child.id, control, lease_set_at=lease_set_at, ids=child.log_ids())):
            wb.log("info", f"called by agent {caller.agent_id} (job {caller.job_id}) at depth {depth}")
            try:
                outcome = self.run(child, wb, control, time_limit_ms=left_ms)
            except Exception as exc:  # a bug or a lasting DB outage: the child still gets a final status
                log.exception("child_run_crashed")
                outcome = Outcome.finish(OutboxStatus.FAILED, f"internal dispatcher error: {type(exc).__name__}")
            outcome = _final(outcome)
            self.held.finishing(child.id)
            self.complete_child(outcome, child, wb)
        assert outcome.status is not None
        messages, dropped = _newest(wb.messages)
        result: dict[str, Any] = {
            "status": outcome.status.value,
            "job_id": child.job_id,
            "messages": messages,
            "output": messages[-1] if messages else None,
        }
        if dropped:
            result["messages_dropped"] = dropped
        if outcome.error:
            result["error"] = outcome.error
        caller_wb.log("info", f"call_agent: child job {child.job_id} finished {outcome.status.value} with "
                              f"{len(wb.messages)} message(s)")
        return result
