"""A dry run (``python -m dispatcher try``): a stored agent run exactly as an invocation runs — its files and env
vars, a session's history if given, the configured Piston, call_llm and call_agent — with every write the run
would make printed as it happens instead of written. Nothing reaches the hub's tables or the outbox: the run has
no row (its id is 0), its writes go to ``DryWriteBack``, and a call_agent child is a dry run too.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from core.db import Pool
from core.vocabulary import HubEvent
from dispatcher import context
from dispatcher.calls import CallRouter
from dispatcher.children import ChildAgents, CollectingWriteBack, RunAttempt
from dispatcher.childrows import NewChild
from dispatcher.claim import Claimed
from dispatcher.config import DispatcherConfig
from dispatcher.control import RunControl
from dispatcher.leases import HeldRows
from dispatcher.llmcalls import LlmCalls, LlmClient
from dispatcher.outcome import Outcome
from dispatcher.protocol import CallMethod
from dispatcher.runner import Runner
from dispatcher.sandbox.port import Sandbox
from dispatcher.states import OutboxStatus

TRY_OWNER = "dry-run"


class Printer:
    """One output for a dry run and its children, line by line (children's lines indented)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()

    def line(self, depth: int, text: str) -> None:
        with self._lock:
            print(("  " * depth) + text, file=self.out, flush=True)


class DryWriteBack(CollectingWriteBack):
    """Prints every write of a run instead of making it; keeps the messages (a child's go back to its caller)."""

    def __init__(self, pool: Pool, printer: Printer, *, job_id: str, depth: int = 0) -> None:
        # The pool is never written to: every write method below prints instead.
        super().__init__(pool, outbox_id=0, job_id=job_id, session_id=None, owner=TRY_OWNER, attempt=1)
        self.printer = printer
        self.depth = depth
        self.user_vars: dict[str, str] = {}

    def _say(self, text: str) -> None:
        self.printer.line(self.depth, text)

    def message(self, seq: int, content: str) -> bool:
        fresh = super().message(seq, content)
        if fresh:
            self._say(f"message: {content}")
        return fresh

    def user_var(self, key: str, value: str) -> bool:
        self.user_vars[key] = value
        self._say(f"user var: {key} = {value!r}")
        return True

    def deltas(self, message_id: str, first_index: int, texts: Sequence[str]) -> None:
        pass  # the whole message is printed when it ends

    def progress(self, percent: float, message: str | None) -> None:
        self._say(f"progress: {percent:g}%" + (f" ({message})" if message else ""))

    def log(self, level: str, message: str) -> None:
        self._say(f"log [{level}]: {message}")

    def finish(self, status: OutboxStatus, *, error: str | None, result: dict[str, Any], status_message: str,
               logs: Sequence[tuple[str, str]] = ()) -> bool:
        for level, line in logs:
            self.log(level, line)
        return True

    def retry_later(self, *, delay_s: float, error: str, status_message: str) -> bool:
        return True

    def announce(self, event: HubEvent) -> None:
        pass  # nobody listens to a dry run's events


class DryChildAgents(ChildAgents):
    """call_agent in a dry run: the child has no row or Job either, and prints its own writes (indented)."""

    def __init__(self, cfg: DispatcherConfig, pool: Pool, held: HeldRows, run: RunAttempt, printer: Printer) -> None:
        super().__init__(cfg, pool, held, run)
        self.printer = printer

    def start_child(self, new: NewChild, caller: Claimed) -> Claimed | None:
        if context.agent_exists(self.pool, new.agent_id):
            return dry_row(agent_id=new.agent_id, user_id=new.user_id, prompt=new.prompt, session_id=None)
        return None

    def child_writeback(self, child: Claimed, caller_wb: Any, control: RunControl) -> CollectingWriteBack:
        depth = caller_wb.depth + 1 if isinstance(caller_wb, DryWriteBack) else 1
        self.printer.line(depth - 1, f"call_agent {child.agent_id}: a dry run too")
        return DryWriteBack(self.pool, self.printer, job_id=child.job_id, depth=depth)

    def complete_child(self, outcome: Outcome, child: Claimed, wb: Any) -> None:
        status = outcome.status.value if outcome.status else outcome.disposition.value
        self.printer.line(wb.depth if isinstance(wb, DryWriteBack) else 1, f"child finished: {status}"
                          + (f" ({outcome.error})" if outcome.error else ""))


def dry_row(*, agent_id: str, user_id: str, prompt: str, session_id: str | None) -> Claimed:
    """A claimed row that exists nowhere: the run's identity for the sandbox, its context and its writes."""
    return Claimed(id=0, job_id=f"dry-run-{uuid.uuid4()}", agent_id=agent_id, session_id=session_id,
                   user_id=user_id, prompt=prompt, attempts=1, max_attempts=1, job_started=True,
                   job_status_before="QUEUED")


def with_user_vars(user_vars: Mapping[str, str]) -> Callable[..., context.AgentContext]:
    """context.load, then the given user variables over the session's (the dry run's --user-var)."""

    def load(pool: Pool, row: Claimed, **kwargs: Any) -> context.AgentContext:
        ctx = context.load(pool, row, **kwargs)
        ctx.context["user_vars"] = {**ctx.context["user_vars"], **user_vars}
        return ctx

    return load


def wire_dry_runner(cfg: DispatcherConfig, pool: Pool, sandbox: Sandbox, llm: LlmClient, printer: Printer,
                    user_vars: Mapping[str, str]) -> Runner:
    """The runner as the worker wires it (dispatcher/worker.py), with the dry call_agent handler."""
    calls = CallRouter()
    runner = Runner(cfg, pool, sandbox, calls, load_context=with_user_vars(user_vars))
    calls.route(CallMethod.CALL_LLM, LlmCalls(cfg, llm))
    calls.route(CallMethod.CALL_AGENT, DryChildAgents(cfg, pool, HeldRows(), runner.attempt, printer))
    return runner
