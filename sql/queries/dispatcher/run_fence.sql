-- run_fence: the fencing token of a run's write (included as the first CTE of every write a run makes). The
-- write happens only while the run still holds its row: still running, leased to this dispatcher (%(owner)s),
-- in the same attempt (%(attempt)s) — a dispatcher that lost its lease, even one paused past it and resumed,
-- changes nothing. FOR SHARE holds the row for the rest of the transaction: a claim (FOR UPDATE SKIP LOCKED)
-- passes it by and an operator's cancel waits, so the check cannot go stale before this write commits.
fence AS (
    SELECT f.id
    FROM agent_hub.invocation_outbox f
    WHERE f.id = %(outbox_id)s AND f.status = 'running' AND f.lease_owner = %(owner)s AND f.attempts = %(attempt)s
    FOR SHARE
)
