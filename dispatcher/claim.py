"""Claiming due outbox rows (the query itself: sql/queries/dispatcher/claim.sql)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core import feed
from core.db import Conn, Pool, run_with_retry
from core.sqlfiles import query
from core.vocabulary import JobStatus, StatusEvent, status_event
from dispatcher.events import EventNotifier


@dataclass(frozen=True)
class Claimed:
    id: int
    job_id: str
    agent_id: str
    session_id: str | None
    user_id: str
    prompt: str
    attempts: int
    max_attempts: int
    job_started: bool             # the Job moved to PROCESSING in the claim
    job_status_before: str | None  # the Job's status before the claim (None: the Job is gone)
    job_session_id: str | None = None  # the Job's sessionId, for its hub_events event
    feed_id: int | None = None    # the PROCESSING feed event the claim appended (None: the Job did not move)

    def log_ids(self) -> dict[str, object]:
        """The ids every log line about this run carries (besides outbox_id)."""
        return {"job_id": self.job_id, "agent_id": self.agent_id, "attempt": self.attempts}

    def started_event(self) -> StatusEvent | None:
        """The hub_events PROCESSING event to send once the claim has committed (None: the Job did not move)."""
        return status_event(self.job_id, self.job_session_id, JobStatus.PROCESSING) if self.job_started else None


# Long enough to get past a pooled connection that died while idle (one failed try, then the pool is
# checked), short enough that an outage reaches the claim and heartbeat loops' own back-off and logs.
RETRY_S = 2.0
ORPHAN_ERROR = "the calling run stopped before this call_agent child finished"  # sweep_orphans.sql's errorMessage


def _one_statement(pool: Pool, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one statement in autocommit: it is atomic on its own, and this spares the BEGIN and COMMIT
    round trips of a transaction block (docs/performance.md)."""
    return run_with_retry(pool, lambda conn: conn.execute(sql, params).fetchall(), retry_s=RETRY_S)


Wake = Callable[[list[str]], None]  # where hub_feed wake-ups go after the commit (EventNotifier.emit_feed)
FeedOf = Callable[[list[dict[str, Any]]], list[feed.FeedEvent]]


def with_feed(conn: Conn, rows: list[dict[str, Any]], feed_of: FeedOf, wake: Wake | None) -> Callable[[], list[str]]:
    """In ``conn``'s open transaction, after the statement that gave ``rows``: send its feed events' insert,
    last (core/feed.py: one insert, the transaction's final locks), without waiting for it (the connection
    is in pipeline mode: the insert and the COMMIT share a round trip). Returns a function that gives, once
    the pipeline has synced, the wake-ups to send after the commit (none when ``wake`` is None: the insert
    NOTIFYs with the commit itself)."""
    events = feed_of(rows)
    ids = feed.queue_events(conn, events, notify=wake is None)
    if wake is None or not events:
        return list
    return lambda: feed.wake_payloads(events, ids())


def _statement_with_feed(pool: Pool, sql: str, params: dict[str, Any], feed_of: FeedOf,
                         wake: Wake | None) -> list[dict[str, Any]]:
    """One statement and the feed events of what it changed, in one transaction, in two round trips
    (BEGIN and the statement; the feed insert and COMMIT)."""
    def run(conn: Conn) -> tuple[list[dict[str, Any]], list[str]]:
        with conn.pipeline(), conn.transaction():
            rows = conn.execute(sql, params).fetchall()
            wakes = with_feed(conn, rows, feed_of, wake)
        return rows, wakes()

    rows, wakes = run_with_retry(pool, run, retry_s=RETRY_S)
    if wakes and wake is not None:
        wake(wakes)
    return rows


def claim(pool: Pool, *, owner: str, batch: int, lease_s: float, running: Sequence[int] = (),
          max_per_user: int = 0, max_per_agent: int = 0, wake: Wake | None = None) -> list[Claimed]:
    """`running`: the ids this dispatcher is running now; their expired leases are not reclaimed by it.

    With a cap (``max_per_user`` / ``max_per_agent`` > 0: live runs across every dispatcher) the fair claim
    runs, serialised across dispatchers by an advisory lock for its transaction (claim_fair.sql).
    The Jobs' PROCESSING ``status`` feed events are appended by the claim statement itself
    (claim_feed.sql); ``wake``: where their hub_feed wake-ups go once it has committed (None: the statement
    NOTIFYs with its commit)."""
    if batch <= 0:
        return []
    params = {"owner": owner, "batch": batch, "lease_s": lease_s, "running": list(running),
              "max_per_user": max_per_user, "max_per_agent": max_per_agent, "notify": wake is None}
    if max_per_user <= 0 and max_per_agent <= 0:
        rows = _one_statement(pool, query("dispatcher/claim"), params)
    else:
        def fair(conn: Conn) -> list[dict[str, Any]]:
            with conn.pipeline(), conn.transaction():  # one round trip: BEGIN, the lock, the claim, COMMIT
                conn.execute(query("dispatcher/claim_lock"))
                cur = conn.execute(query("dispatcher/claim_fair"), params)
            return cur.fetchall()

        rows = run_with_retry(pool, fair, retry_s=RETRY_S)
    claimed = [Claimed(**row) for row in rows]
    if wake is not None:
        wakes = [feed.wake_payload(c.job_session_id, c.job_id, c.feed_id) for c in claimed if c.feed_id is not None]
        if wakes:
            wake(wakes)
    return claimed


def heartbeat(pool: Pool, *, owner: str, ids: list[int], lease_s: float,
              renewed: set[int] | None = None) -> dict[int, str | None]:
    """Renew leases; returns {row id: Job status} for the rows still ours (a missing id: lease lost).
    ``renewed`` receives the ids whose lease this beat really moved (a row locked by a commit in flight is
    still ours but keeps its previous expiry)."""
    if not ids:
        return {}
    rows = _one_statement(pool, query("dispatcher/heartbeat"), {"owner": owner, "ids": ids, "lease_s": lease_s})
    if renewed is not None:
        renewed.update(row["id"] for row in rows if row["renewed"])
    return {row["id"]: row["job_status"] for row in rows}


def release(pool: Pool, *, owner: str, rows: Sequence[tuple[int, int]],
            events: EventNotifier | None = None) -> list[int]:
    """Give rows back (shutdown, a self-fenced run): ``rows`` are (id, attempt) pairs, released only while
    still leased to ``owner`` in that attempt; they are claimable again at once. The Jobs' QUEUED status goes
    to ``events`` once this has committed."""
    if not rows:
        return []
    params = {"owner": owner, "ids": [r[0] for r in rows], "attempts": [r[1] for r in rows]}
    rows_out = _statement_with_feed(
        pool, query("dispatcher/release"), params,
        lambda out: [feed.status(r["job_id"], r["session_id"], status=r["job_status"]) for r in out
                     if r["job_status"] is not None],
        None if events is None else events.emit_feed)
    if events is not None:
        for r in rows_out:
            if r["job_status"] is not None:
                events.emit(status_event(r["job_id"], r["session_id"], r["job_status"]))
    return [row["id"] for row in rows_out]


def sweep_orphans(pool: Pool, events: EventNotifier | None = None) -> list[int]:
    """Fail call_agent children whose caller's dispatcher died (their lease expired). The Jobs' FAILED
    status goes to ``events`` once this has committed."""
    rows = _statement_with_feed(
        pool, query("dispatcher/sweep_orphans"), {},
        lambda out: [feed.status(r["job_id"], r["session_id"], status=JobStatus.FAILED.value, error_message=ORPHAN_ERROR)
                     for r in out if r["job_failed"]],
        None if events is None else events.emit_feed)
    if events is not None:
        for r in rows:
            if r["job_failed"]:
                events.emit(status_event(r["job_id"], r["session_id"], JobStatus.FAILED))
    return [row["id"] for row in rows]
