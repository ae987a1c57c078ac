"""Fairness between users with the real processes: a user's backlog does not hold back another user's prompt
(DISPATCHER_MAX_RUNNING_PER_USER), across two dispatchers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import factories
from tests.stack import Stack, agent_with_code

ONE_SECOND = "import time, hub\ntime.sleep(1)\nhub.send_message('done')\n"


@pytest.fixture(scope="module")
def stack(module_db_url: str) -> Iterator[Stack]:
    s = Stack(module_db_url, dispatcher_env={"DISPATCHER_CONCURRENCY": "2", "DISPATCHER_MAX_RUNNING_PER_USER": "1"})
    s.start()
    yield s
    s.close()


OVERLAPPING_RUNS = """
WITH spans AS (
    SELECT e.outbox_id, e.to_status, e.attempts, e.at AS since,
           lead(e.at) OVER (PARTITION BY e.outbox_id ORDER BY e.id) AS until
    FROM agent_hub.invocation_outbox_event e JOIN agent_hub.invocation_outbox o ON o.id = e.outbox_id
    WHERE o.user_id = %(user_id)s
)
SELECT x.outbox_id AS a, x.attempts AS a_attempt, y.outbox_id AS b, y.attempts AS b_attempt,
       x.since AS a_since, x.until AS a_until, y.since AS b_since, y.until AS b_until
FROM spans x JOIN spans y ON x.outbox_id < y.outbox_id
WHERE x.to_status = 'running' AND y.to_status = 'running'
  AND x.since < coalesce(y.until, 'infinity') AND y.since < coalesce(x.until, 'infinity')
"""


def started_order(stack: Stack, job_ids: list[str]) -> list[str]:
    with stack.connect() as conn:
        rows = conn.execute("SELECT o.job_id FROM agent_hub.invocation_outbox_event e "
                            "JOIN agent_hub.invocation_outbox o ON o.id = e.outbox_id "
                            "WHERE e.reason = 'claimed' AND o.job_id = ANY(%s) ORDER BY e.id", (job_ids,)).fetchall()
    return [r["job_id"] for r in rows]


def test_a_second_users_prompt_starts_within_one_slot_hand_over_of_a_twelve_run_backlog(
    stack: Stack, tmp_path: Path
) -> None:
    with stack.connect() as conn:
        a = agent_with_code(conn, tmp_path, ONE_SECOND)
        backlog = [a]
        for _ in range(11):
            sid = factories.session(conn, a.user_id, a.agent_id)
            factories.chat_message(conn, sid, "user", "p")
            backlog.append(factories.World(a.user_id, a.agent_id, sid, factories.job(conn, a.user_id, a.agent_id, sid), "p"))
        b = agent_with_code(conn, tmp_path, ONE_SECOND)
    for w in backlog:
        assert stack.post(w).status_code == 202
    assert stack.post(b).status_code == 202
    assert stack.wait_job(b.job_id, timeout=60)["status"] == "SUCCEEDED"
    order = started_order(stack, [w.job_id for w in backlog] + [b.job_id])
    # user A never holds more than one slot, so B's run took the other one at once: at most one of A's runs
    # (the one already running, or the next in a hand-over) started before it.
    assert order.index(b.job_id) <= 2, order
    for w in backlog:
        assert stack.wait_job(w.job_id, timeout=90)["status"] == "SUCCEEDED"
    # The cap held: no two of user A's rows were running at once. Each stretch in `running` is taken from the
    # rows' history, from the transition in to the next transition out (a row retried on a loaded machine has
    # several; its started_at is its first attempt's).
    with stack.connect() as conn:
        overlaps = conn.execute(OVERLAPPING_RUNS, {"user_id": a.user_id}).fetchall()
    assert overlaps == [], overlaps
