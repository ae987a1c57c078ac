"""dispatcher/leases.py beat: what the heartbeat does with a held row it no longer finds ours. A run still going
is stopped (lease_lost), and the line names the run's ids like every line of an invocation. A run whose outcome
is being written is left alone: that commit is often what ended the row's lease a moment before the beat."""

from __future__ import annotations

import psycopg
import structlog
from psycopg_pool import ConnectionPool

from dispatcher import claim as claims
from dispatcher import leases
from dispatcher.control import RunControl, StopReason
from dispatcher.leases import HeldRows
from tests import factories

OWNER = "beat-host:1:aaaabbbb"


def test_a_lost_row_stops_its_run_with_its_ids_in_the_line_and_a_finishing_row_is_left_alone(
        conn: psycopg.Connection, pool: ConnectionPool) -> None:
    ids = [factories.enqueue(conn, factories.world(conn)) for _ in range(2)]
    conn.commit()
    rows = claims.claim(pool, owner=OWNER, batch=2, lease_s=30)
    assert [r.id for r in rows] == ids
    held = HeldRows()
    controls = {r.id: RunControl() for r in rows}
    for r in rows:
        held.add(r.id, controls[r.id], ids={"job_id": r.job_id, "agent_id": r.agent_id, "attempt": r.attempts})
    running, finishing = rows
    held.finishing(finishing.id)
    # Both rows stop being ours (the finishing one as its outcome's commit would do it).
    conn.execute("UPDATE agent_hub.invocation_outbox SET status = 'succeeded', lease_owner = NULL, "
                 "lease_expires_at = NULL, finished_at = now() WHERE id = %s", (finishing.id,))
    conn.execute("UPDATE agent_hub.invocation_outbox SET lease_owner = 'another:2:ccccdddd' WHERE id = %s",
                 (running.id,))
    conn.commit()

    with structlog.testing.capture_logs() as logs:
        leases.beat(pool, held, owner=OWNER, lease_s=30)

    assert controls[running.id].reason == StopReason.LEASE_LOST
    assert controls[finishing.id].reason is None
    lost = [line for line in logs if line["event"] == "lease_lost"]
    assert [{k: line.get(k) for k in ("outbox_id", "job_id", "agent_id", "attempt")} for line in lost] == [
        {"outbox_id": running.id, "job_id": running.job_id, "agent_id": running.agent_id, "attempt": 1}]


def test_a_removed_row_forgets_its_ids_and_that_it_was_finishing() -> None:
    held = HeldRows()
    held.add(7, RunControl(), ids={"job_id": "j", "agent_id": "a", "attempt": 1})
    held.finishing(7)
    assert held.is_finishing(7) and held.ids(7) == {"job_id": "j", "agent_id": "a", "attempt": 1}
    held.remove(7)
    assert not held.is_finishing(7) and held.ids(7) == {}
    held.finishing(7)  # a row not held cannot be marked
    assert not held.is_finishing(7)
