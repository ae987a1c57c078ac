"""``hub.call_agent``: another agent run as a child invocation, inline, inside the caller's run.

The child gets its own Job (visible on the hub, with its own JobLogs and final status) and its
own outbox row (``parent_id``, ``depth``, ``agent_chain``), inserted already running and leased
to this dispatcher, and is run by the same code as any invocation (``Runner.attempt`` then
``apply_outcome``) in the calling thread, while the caller waits for its reply.

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
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
import structlog
from psycopg_pool import PoolTimeout

from core.db import Conn, Pool, run_with_retry
from core.sqlfiles import query
from dispatcher import claim as claims
from dispatcher.claim import Claimed
from dispatcher.config import DispatcherConfig
from dispatcher.events import status_event
from dispatcher.runner import RunControl, Runner, apply_outcome
from dispatcher.states import Disposition, JobStatus, OutboxStatus, Outcome, StopReason
from dispatcher.writeback import WriteBack

log = structlog.get_logger("dispatcher.children")

MIN_CHILD_MS = 1000           # a child is not started with less time than this
PISTON_WAIT_MARGIN_S = 30.0   # the Piston client may wait this long past the run's limit (its execute margin)
REPLY_MAX_CHARS = 1_000_000   # the child's messages returned to the caller, newest kept


@dataclass(frozen=True)
class Lineage:
    depth: int
    chain: list[str]  # agent ids from the top-level invocation down to this run's agent


def lineage(pool: Pool, outbox_id: int, agent_id: str) -> Lineage:
    row = run_with_retry(pool, lambda c: c.execute(query("dispatcher/lineage"), {"id": outbox_id}).fetchone(), retry_s=60.0)
    if row is None:
        return Lineage(0, [agent_id])
    return Lineage(int(row["depth"]), list(row["agent_chain"]) or [agent_id])


@dataclass
class ChildControl(RunControl):
    """A child stops when its caller stops (cancelled, lease lost, shutdown), for the same reason."""

    parent: RunControl | None = None

    def should_stop(self) -> bool:
        if self.parent is not None and self.reason is None and self.parent.should_stop():
            assert self.parent.reason is not None
            self.stop(self.parent.reason)
        return self.reason is not None


class ChildWatch:
    """The dispatcher's heartbeat covers top-level runs only: this renews a child's lease and
    stops the child when its own Job is cancelled on the hub, while the child runs."""

    def __init__(self, pool: Pool, cfg: DispatcherConfig, row_id: int, control: RunControl, lease_s: float) -> None:
        self.pool, self.cfg, self.row_id, self.control, self.lease_s = pool, cfg, row_id, control, lease_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"child-{row_id}", daemon=True)

    def __enter__(self) -> ChildWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._done.wait(self.cfg.heartbeat_s):
            try:
                alive = claims.heartbeat(self.pool, owner=self.cfg.owner, ids=[self.row_id], lease_s=self.lease_s)
            except (psycopg.Error, PoolTimeout) as exc:
                log.warning("child_heartbeat_failed", error=type(exc).__name__)
                continue
            if self.row_id not in alive:
                self.control.stop(StopReason.LEASE_LOST)
            elif alive[self.row_id] == JobStatus.CANCELLED.value:
                self.control.stop(StopReason.CANCELLED)


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


@dataclass
class Caller:
    """What a child needs from the run that calls it."""

    runner: Runner
    outbox_id: int
    job_id: str
    agent_id: str
    user_id: str
    control: RunControl
    deadline: float  # time.monotonic() at which the caller's run ends
    children: list[str] = field(default_factory=list)  # child job ids, in call order


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


def run_child(caller: Caller, agent_id: str, input_data: Any, caller_wb: WriteBack) -> dict[str, Any]:
    """Run ``agent_id`` as a child of ``caller``; always returns the result dict (refusals included)."""
    cfg = caller.runner.cfg
    pool = caller.runner.pool
    here = lineage(pool, caller.outbox_id, caller.agent_id)
    depth = here.depth + 1
    if agent_id in here.chain:
        path = " → ".join([*here.chain, agent_id])
        return refused(f"call_agent refused: agent {agent_id} is already in the call chain ({path}); cycles are not allowed")
    if depth > cfg.max_agent_depth:
        return refused(f"call_agent refused: the child would be at depth {depth}, over HUB_MAX_AGENT_DEPTH "
                       f"({cfg.max_agent_depth})")
    left_ms = int((caller.deadline - time.monotonic()) * 1000) - cfg.child_time_margin_ms
    if left_ms < MIN_CHILD_MS:
        return refused(f"call_agent refused: not enough of the caller's run time left ({max(left_ms, 0)} ms after the "
                       f"{cfg.child_time_margin_ms} ms margin; at least {MIN_CHILD_MS} ms needed)")
    prompt = child_prompt(input_data)
    job_id = str(uuid.uuid4())
    # Long enough for the whole child (the Piston client may wait past its limit); renewed by ChildWatch.
    lease_s = left_ms / 1000 + PISTON_WAIT_MARGIN_S + cfg.lease_s
    params = {
        "agent_id": agent_id,
        "job_id": job_id,
        "user_id": caller.user_id,
        "prompt": prompt,
        "status_message": "running (called by another agent)",
        "owner": cfg.owner,
        "lease_s": lease_s,
        "parent_id": caller.outbox_id,
        "depth": depth,
        "chain": [*here.chain, agent_id],
    }
    actor = {"actor": "dispatcher", "reason": f"call_agent from outbox row {caller.outbox_id}"}

    def insert(conn: Conn) -> dict[str, Any] | None:
        with conn.transaction():  # the actor setting is local to this transaction (0003's trigger reads it)
            conn.execute(query("ops/set_actor"), actor)
            return conn.execute(query("dispatcher/insert_child"), params).fetchone()

    # Retried on a lost connection like every dispatcher use of the pool. Should a commit succeed and its
    # answer be lost, the retry makes a second child; the first, never run, is failed by sweep_orphans.
    row = run_with_retry(pool, insert, retry_s=60.0)
    if row is None:
        return refused(f"call_agent failed: agent {agent_id} does not exist")
    child = Claimed(**row, job_started=True, job_status_before="QUEUED")
    caller_wb.announce(status_event(child.job_id, None, JobStatus.PROCESSING.value))  # committed: the pool's block ended
    caller.children.append(child.job_id)
    caller_wb.log("info", f"call_agent: running agent {agent_id} as child job {child.job_id} (depth {depth}, "
                          f"time limit {left_ms} ms)")
    child_cfg = replace(cfg, run_timeout_ms=left_ms)
    wb = CollectingWriteBack(pool, outbox_id=child.id, job_id=child.job_id, session_id=None, owner=cfg.owner,
                             events=caller_wb.events, committer=caller_wb.committer)
    control = ChildControl(parent=caller.control)
    with (structlog.contextvars.bound_contextvars(child_job_id=child.job_id, child_outbox_id=child.id, child_agent_id=agent_id),
          ChildWatch(pool, cfg, child.id, control, lease_s)):
        wb.log("info", f"called by agent {caller.agent_id} (job {caller.job_id}) at depth {depth}")
        try:
            outcome = Runner(child_cfg, pool, caller.runner.client).attempt(child, wb, control)
        except Exception as exc:  # a bug or a lasting DB outage: the child still gets a final status
            log.exception("child_run_crashed")
            outcome = Outcome.finish(OutboxStatus.FAILED, f"internal dispatcher error: {type(exc).__name__}")
        outcome = _final(outcome)
        label = apply_outcome(outcome, child, wb, cfg=child_cfg, pool=pool)
        log.info("child_run_done", outcome=label)
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
