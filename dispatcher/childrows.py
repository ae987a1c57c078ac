"""The outbox rows of hub.call_agent children: where a run sits in its call chain, and a new child row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core import feed
from core.db import Conn, Pool, run_with_retry
from core.sqlfiles import query
from dispatcher.claim import Claimed
from dispatcher.states import JobStatus

RETRY_S = 60.0


@dataclass(frozen=True)
class Lineage:
    depth: int
    chain: list[str]  # agent ids from the top-level invocation down to this run's agent


def lineage(pool: Pool, outbox_id: int, agent_id: str) -> Lineage:
    row = run_with_retry(pool, lambda c: c.execute(query("dispatcher/lineage"), {"id": outbox_id}).fetchone(), retry_s=RETRY_S)
    if row is None:
        return Lineage(0, [agent_id])
    return Lineage(int(row["depth"]), list(row["agent_chain"]) or [agent_id])


@dataclass(frozen=True)
class NewChild:
    agent_id: str
    job_id: str
    user_id: str
    prompt: str
    parent_id: int
    depth: int
    chain: list[str]


def insert_child(pool: Pool, child: NewChild, *, owner: str, lease_s: float, caller_attempt: int) -> Claimed | None:
    """The child's Job and outbox row, inserted already running and leased to ``owner``, as a claimed row
    (None: the agent does not exist, or the caller's run no longer holds its row: the insert is fenced by the
    caller's row and ``caller_attempt``). The Job's PROCESSING event is the caller's to announce."""
    params = {
        "outbox_id": child.parent_id,
        "attempt": caller_attempt,
        "agent_id": child.agent_id,
        "job_id": child.job_id,
        "user_id": child.user_id,
        "prompt": child.prompt,
        "status_message": "running (called by another agent)",
        "owner": owner,
        "lease_s": lease_s,
        "parent_id": child.parent_id,
        "depth": child.depth,
        "chain": child.chain,
    }
    actor = {"actor": "dispatcher", "reason": f"call_agent from outbox row {child.parent_id}"}

    def insert(conn: Conn) -> dict[str, Any] | None:
        with conn.transaction():  # the actor setting is local to this transaction (0003's trigger reads it)
            conn.execute(query("ops/set_actor"), actor)
            row = conn.execute(query("dispatcher/insert_child"), params).fetchone()
            if row is not None:  # its PROCESSING status on the feed, in the same transaction (last: core/feed.py)
                feed.insert_events(conn, [feed.status(child.job_id, None, status=JobStatus.PROCESSING.value)])
            return row

    # Retried on a lost connection like every dispatcher use of the pool. Should a commit succeed and its
    # answer be lost, the retry makes a second child; the first, never run, is failed by sweep_orphans.
    row = run_with_retry(pool, insert, retry_s=RETRY_S)
    if row is None:
        return None
    return Claimed(**row, job_started=True, job_status_before=JobStatus.QUEUED.value)
