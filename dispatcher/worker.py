"""The dispatcher process: claim loop, run slots, heartbeat, graceful shutdown."""

from __future__ import annotations

import math
import queue
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import psycopg
import structlog
from psycopg_pool import PoolTimeout

from core import metrics
from core.backoff import Backoff, Streak
from core.db import Pool, PoolService, make_pool
from core.lifecycle import Entry, Periodic, Services
from core.logging import get_logger
from core.vocabulary import RunLabel
from dispatcher import claim as claims
from dispatcher import leases
from dispatcher.calls import CallRouter
from dispatcher.children import ChildAgents
from dispatcher.claim import Claimed
from dispatcher.completer import apply_outcome
from dispatcher.config import DispatcherConfig, HttpSettings
from dispatcher.control import RunControl, StopReason
from dispatcher.events import EventNotifier
from dispatcher.gemini import GeminiClient
from dispatcher.groupcommit import GroupCommitter
from dispatcher.httpcall.broker import broker_for
from dispatcher.httpcalls import HttpCalls
from dispatcher.leases import HeldRows
from dispatcher.listener import Listener
from dispatcher.llmcalls import LlmCalls, LlmClient
from dispatcher.maintenance.orphan_sweeper import orphan_sweeper
from dispatcher.maintenance.schedule_firer import schedule_firer
from dispatcher.maintenance.stale_sessions import session_name, stale_session_ender
from dispatcher.outcome import Disposition, Outcome
from dispatcher.protocol import CallMethod
from dispatcher.runner import Runner
from dispatcher.sandbox.pool import piston_sandbox
from dispatcher.sandbox.port import Sandbox
from dispatcher.writeback import WriteBack, count_retry

log = get_logger("dispatcher")

# Between claims while Postgres cannot be reached: 0.5 s doubling to 10 s, jittered (core/backoff.py).
CLAIM_BACKOFF = Backoff(base_s=0.5, max_s=10.0, jitter=0.5)
# Between tries of an outcome's write while Postgres cannot be reached (beyond the writers' own 60 s).
OUTCOME_BACKOFF = Backoff(base_s=0.5, max_s=5.0, jitter=0.5)


class RunSlots:
    """The run slots' threads, each taking the next claimed row from a queue. A hand-off is one C-level
    ``SimpleQueue.put``: ``ThreadPoolExecutor.submit`` cost a Python semaphore, a Future and its callbacks
    per run (docs/performance.md, session 4). ``target`` must not raise (``Dispatcher._execute`` does not);
    if it does, the error is logged and the thread takes the next row."""

    def __init__(self, size: int, target: Callable[[Claimed, RunControl], None]) -> None:
        self.size = size
        self.target = target
        self._queue: queue.SimpleQueue[tuple[Claimed, RunControl] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, row: Claimed, control: RunControl) -> None:
        if not self._threads:  # started with the first run, as the executor did
            self._threads = [threading.Thread(target=self._loop, name=f"run_{i}", daemon=True) for i in range(self.size)]
            for thread in self._threads:
                thread.start()
        self._queue.put((row, control))

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self.target(*item)
            except BaseException:  # never lose the slot's thread
                log.exception("run_slot_error")

    def shutdown(self) -> None:
        """Let the queued runs finish, then end the threads."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()


def wire_runner(cfg: DispatcherConfig, pool: Pool, sandbox: Sandbox, held: HeldRows, llm: LlmClient) -> Runner:
    """The runner with the handlers of the calls an agent makes back: call_llm asks the model, call_agent
    runs a child through this same runner (its row held, so the heartbeat renews its lease too), http goes
    through the process's HTTP broker."""
    calls = CallRouter()
    runner = Runner(cfg, pool, sandbox, calls)
    calls.route(CallMethod.CALL_LLM, LlmCalls(cfg, llm))
    calls.route(CallMethod.CALL_AGENT, ChildAgents(cfg, pool, held, run=runner.attempt))
    calls.route(CallMethod.HTTP, HttpCalls(broker_for(HttpSettings.of(cfg))))
    return runner


class Dispatcher:
    def __init__(
        self,
        cfg: DispatcherConfig,
        *,
        pool: Pool | None = None,
        sandbox: Sandbox | None = None,
        listen: bool = True,
    ) -> None:
        self.cfg = cfg
        # hub_events, sent after each write commits, in batches (dispatcher/events.py, docs/performance.md)
        # Every session is named for this dispatcher (its lease owner's tag): another dispatcher can then end
        # them if this one freezes mid-transaction past its lease (dispatcher/maintenance/stale_sessions.py).
        self.events = EventNotifier(cfg.database_url,
                                    application_name=session_name("agent-hub-dispatcher-events", cfg.owner))
        # The run slots' writes share transactions: one commit per batch, not per write (docs/performance.md).
        # One writer by default: twice the writes per commit of two, for less CPU in both processes (session 4).
        # Their feed events' hub_feed wake-ups go out after the commit, with the hub_events (core/feed.py).
        # A connection idle inside a transaction for a whole lease belongs to a paused or frozen dispatcher:
        # Postgres ends it, so its row locks cannot keep the rows from being reclaimed once the lease is gone.
        idle_ms = max(1000, int(cfg.lease_s * 1000))
        self.committer = GroupCommitter(cfg.database_url, writers=cfg.writers, on_retry=count_retry,
                                        on_feed=self.events.emit_feed, idle_in_transaction_ms=idle_ms,
                                        application_name=session_name("agent-hub-dispatcher-writer", cfg.owner))
        self.pool = pool or make_pool(
            cfg.database_url,
            min_size=1,
            max_size=cfg.concurrency + 3,
            timeout_s=10.0,
            statement_timeout_ms=30_000,
            application_name=session_name("agent-hub-dispatcher", cfg.owner),
            # Every use retries a dead connection (core.db.run_with_retry): no round trip per check-out.
            check=False,
            idle_in_transaction_ms=idle_ms,
        )
        self.sandbox = sandbox or piston_sandbox(cfg)  # one Piston server, or a pool (PISTON_URL=a,b)
        self.llm = GeminiClient(cfg)  # one per process
        self.held = HeldRows()  # every row running here, call_agent children included: the heartbeat renews them
        self.runner = wire_runner(cfg, self.pool, self.sandbox, self.held, self.llm)
        self.listen = listen
        self.wake = threading.Event()
        self.slot_freed = threading.Event()  # set as each run ends (the claim's linger waits on it)
        self._backlog = False  # the last claim got every row it asked for: more are probably due
        self.stopping = threading.Event()
        self._lock = threading.RLock()  # re-entrant: the SIGTERM handler runs on the main thread, which may hold it
        self._running: dict[int, RunControl] = {}
        self._slots = RunSlots(cfg.concurrency, self._execute)
        self.outcomes: dict[str, int] = {}
        self._grace_deadline = math.inf  # set when draining starts: until then an outcome's write waits on

    # -- slots ---------------------------------------------------------------
    def free_slots(self) -> int:
        with self._lock:
            return self.cfg.concurrency - len(self._running)

    def running_ids(self) -> list[int]:
        with self._lock:
            return list(self._running)

    def _execute(self, row: Claimed, control: RunControl) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(outbox_id=row.id, **row.log_ids())
        wb = WriteBack(self.pool, outbox_id=row.id, job_id=row.job_id, session_id=row.session_id, owner=self.cfg.owner,
                       attempt=row.attempts, events=self.events, committer=self.committer,
                       on_lost=lambda: control.stop(StopReason.LEASE_LOST), stopped=control.should_stop)
        started = time.monotonic()
        label: str = RunLabel.ERROR
        try:
            try:
                outcome = self.runner.attempt(row, wb, control)
            except Exception as exc:  # a bug or a lasting DB outage: never leave the row stuck
                log.exception("run_crashed")
                outcome = Outcome.retry_later(f"internal dispatcher error: {type(exc).__name__}")
            self.held.finishing(row.id)
            label = self._complete(outcome, row, wb)
        finally:
            self.held.remove(row.id)
            with self._lock:
                self._running.pop(row.id, None)
                self.outcomes[label] = self.outcomes.get(label, 0) + 1
            metrics.run_finished(label, time.monotonic() - started)
            log.info("run_done", outcome=label, seconds=round(time.monotonic() - started, 3))
            structlog.contextvars.clear_contextvars()
            self.slot_freed.set()
            self.wake.set()  # a slot is free: claim the backlog now, not at the next poll

    def _complete(self, outcome: Outcome, row: Claimed, wb: WriteBack) -> RunLabel:
        """Write the outcome, however long Postgres is away: the agent's work is done, and the write is fenced,
        so it lands if the row is still ours when the database is back (the row stays held meanwhile, so the
        heartbeat renews its lease then) and changes nothing if another dispatcher took it. Gives up only when
        this dispatcher is shutting down past its grace: the row's lease then runs out and it runs again."""
        streak = Streak(OUTCOME_BACKOFF)
        while True:
            try:
                label = apply_outcome(outcome, row, wb, cfg=self.cfg, pool=self.pool)
            except (psycopg.OperationalError, PoolTimeout) as exc:
                if self.stopping.is_set() and time.monotonic() > self._grace_deadline:
                    log.error("outcome_not_written", error=type(exc).__name__, disposition=str(outcome.disposition))
                    return RunLabel.ERROR
                wait = streak.failed()
                log.warning("outcome_write_waiting", error=type(exc).__name__, retry_in_s=round(wait, 3))
                time.sleep(wait)
                continue
            if label is RunLabel.LEASE_LOST and outcome.disposition is not Disposition.ABANDON:
                metrics.OUTCOMES_DROPPED.inc()
                log.warning("outcome_dropped", reason="the row is no longer this run's (claimed by another dispatcher)",
                            disposition=str(outcome.disposition))
            return label

    def fill(self) -> int:
        """Claim rows for the free slots; returns how many were started."""
        started = 0
        while not self.stopping.is_set():
            free = self._gather(self.free_slots())
            if free <= 0:
                break
            sent_at = self.held.clock()  # the leases below were set no earlier than this
            rows = claims.claim(self.pool, owner=self.cfg.owner, batch=min(free, self.cfg.batch_size), lease_s=self.cfg.lease_s,
                                running=self.running_ids(), max_per_user=self.cfg.max_running_per_user,
                                max_per_agent=self.cfg.max_running_per_agent, wake=self.events.emit_feed)
            self._backlog = len(rows) == min(free, self.cfg.batch_size)
            if not rows:
                break
            metrics.CLAIMS.inc(len(rows))
            for row in rows:
                event = row.started_event()  # the claim has committed; queued before the run's own events
                if event is not None:
                    self.events.emit(event)
                control = RunControl()
                self.held.add(row.id, control, lease_set_at=sent_at, ids=row.log_ids())
                with self._lock:
                    self._running[row.id] = control
                self._slots.submit(row, control)
                started += 1
            if len(rows) < min(free, self.cfg.batch_size):
                break
        return started

    def _gather(self, free: int) -> int:
        """While a backlog waits and other runs still go, let a few more slots free up before claiming (for at
        most DISPATCHER_CLAIM_LINGER_MS): one claim of several rows instead of a claim per freed slot, the
        claim being the dispatcher's costliest statement (docs/performance.md, session 4). Never when every
        slot is free (a lone invocation is claimed at once) nor after a claim that found fewer rows than it
        asked for (no backlog: the next row is claimed as soon as it is woken for)."""
        want = max(1, min(self.cfg.batch_size, self.cfg.concurrency) // 2)
        if free >= want or free <= 0 or not self._backlog or self.cfg.claim_linger_s <= 0:
            return free
        deadline = time.monotonic() + self.cfg.claim_linger_s
        while free < want and not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.slot_freed.wait(left)
            self.slot_freed.clear()
            free = self.free_slots()
        return free

    # -- heartbeat -----------------------------------------------------------
    def heartbeat_once(self) -> None:
        leases.beat(self.pool, self.held, owner=self.cfg.owner, lease_s=self.cfg.lease_s)

    # -- lifecycle -----------------------------------------------------------
    def services(self) -> list[Entry]:
        """The background services, in start order (core/lifecycle.py stops them in reverse). Each may use
        those before it: the writers' last writes are announced by hub_events, and committed before it
        stops; the heartbeat renews the leases of runs still finishing until after they have."""
        cfg = self.cfg
        entries = [
            Entry(PoolService(self.pool), stop_timeout_s=5.0),
            Entry(self.events, stop_timeout_s=5.0),  # sends what the last writes announced
            Entry(self.committer, stop_timeout_s=65.0),  # its retry window while Postgres is away, and a bit
        ]
        if cfg.metrics_port:
            entries.append(Entry(metrics.MetricsServer(self.pool, cfg.metrics_port), stop_timeout_s=2.0))
        heartbeat = Periodic("heartbeat", cfg.heartbeat_s, self.heartbeat_once, expected=(psycopg.Error, PoolTimeout))
        entries.append(Entry(heartbeat, stop_timeout_s=5.0))
        entries.append(Entry(leases.lease_watch(self.held, lease_s=cfg.lease_s, heartbeat_s=cfg.heartbeat_s),
                             stop_timeout_s=2.0))
        entries.append(Entry(orphan_sweeper(self.pool, self.events, period_s=cfg.poll_interval_s,
                                            first_after_s=cfg.heartbeat_s), stop_timeout_s=5.0))
        entries.append(Entry(schedule_firer(self.pool, self.wake, max_attempts=cfg.outbox_max_attempts,
                                            period_s=cfg.poll_interval_s, first_after_s=cfg.heartbeat_s),
                             stop_timeout_s=5.0))
        # A session of another dispatcher frozen mid-transaction past its lease holds its rows' locks: end it
        # once the lease has been gone for one more lease (the idle-in-transaction limit ends most sooner).
        entries.append(Entry(stale_session_ender(self.pool, self.wake, owner=cfg.owner, grace_s=cfg.lease_s,
                                                 period_s=cfg.poll_interval_s, first_after_s=cfg.heartbeat_s),
                             stop_timeout_s=5.0))
        if self.listen:
            entries.append(Entry(Listener(cfg.database_url, self.wake), stop_timeout_s=2.0))
        return entries

    def request_stop(self, *_: object) -> None:
        if self.stopping.is_set():
            # Second signal: do not wait for the grace period.
            with self._lock:
                controls = list(self._running.values())
            for control in controls:
                control.stop(StopReason.SHUTDOWN)
        self.stopping.set()
        self.wake.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("shutdown_requested", signal=signal.Signals(signum).name)
            self.request_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run_forever(self) -> None:
        # hub.call_llm's SDK (google-genai) takes ~0.8 s to import: load it beside start-up, so neither the
        # start (failover, scale-out) nor the first call waits for it (a call that comes first waits for
        # what is left). Without a key no call reaches the SDK: it is never loaded.
        if self.llm.configured:
            threading.Thread(target=self.llm.warm, name="llm-warm-up", daemon=True).start()
        services = Services(self.services())
        services.start()
        log.info("dispatcher_started", owner=self.cfg.owner, concurrency=self.cfg.concurrency,
                 transport=self.cfg.piston_transport, piston=[s.url for s in self.cfg.piston_servers])
        streak = Streak(CLAIM_BACKOFF)
        while not self.stopping.is_set():
            try:
                self.fill()
                streak.succeeded()
            except (psycopg.Error, PoolTimeout) as exc:
                wait = streak.failed()
                log.warning("claim_failed", error=type(exc).__name__, retry_in_s=round(wait, 3))
                # Woken early by the listener's reconnect (or a stop), so claiming resumes as Postgres returns.
                self.wake.wait(wait)
                self.wake.clear()
                continue
            self.wake.wait(self.cfg.poll_interval_s)
            self.wake.clear()
        self._drain()
        self._slots.shutdown()
        services.stop()  # in reverse: listener, maintenance, heartbeat, metrics, writers, hub_events, pool
        log.info("dispatcher_stopped", outcomes=self.outcomes)

    def _drain(self) -> None:
        """Stop claiming; let runs finish within the grace; then release the rest."""
        deadline = self._grace_deadline = time.monotonic() + self.cfg.shutdown_grace_s
        log.info("draining", running=len(self.running_ids()), grace_s=self.cfg.shutdown_grace_s)
        while self.running_ids() and time.monotonic() < deadline:
            time.sleep(0.05)
        leftover = self.running_ids()
        if leftover:
            log.warning("grace_expired_releasing", rows=leftover)
            with self._lock:
                for control in self._running.values():
                    control.stop(StopReason.SHUTDOWN)
            end = time.monotonic() + 5.0
            while self.running_ids() and time.monotonic() < end:
                time.sleep(0.05)
