-- heartbeat: renew the leases of the rows this dispatcher is running and report
-- each one's Job status, so a cancelled Job or a lost lease is noticed promptly.
--
-- A row locked right now is skipped, not waited for: its run's finish is committing in the
-- dispatcher's group commit (dispatcher/groupcommit.py), whose transaction locks several runs' rows
-- in its own order, so waiting here could deadlock with it. A skipped row that is still ours (by
-- this statement's snapshot) is reported like a renewed one: it keeps its lease, which is many
-- beats long, until the next beat. Rows not returned are no longer ours (lease lost).
WITH mine AS (
    SELECT id
    FROM agent_hub.invocation_outbox
    WHERE id = ANY(%(ids)s) AND status = 'running' AND lease_owner = %(owner)s
    ORDER BY id
    FOR UPDATE SKIP LOCKED
),
renewed AS (
    UPDATE agent_hub.invocation_outbox o
    SET lease_expires_at = now() + make_interval(secs => %(lease_s)s)
    FROM mine
    WHERE o.id = mine.id
    RETURNING o.id
)
SELECT o.id, j."status"::text AS job_status, (r.id IS NOT NULL) AS renewed
FROM agent_hub.invocation_outbox o
LEFT JOIN renewed r ON r.id = o.id
LEFT JOIN "Job" j ON j."id" = o.job_id
WHERE o.id = ANY(%(ids)s) AND o.status = 'running' AND o.lease_owner = %(owner)s
