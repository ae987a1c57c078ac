-- sweep_orphans: child invocations (hub.call_agent) whose lease expired: the dispatcher
-- running their caller died. Nobody waits for them any more, so they end FAILED (the
-- caller's own row is reclaimed and re-run, and makes a new child if it still wants one).
WITH orphans AS (
    SELECT id FROM agent_hub.invocation_outbox
    WHERE status = 'running' AND parent_id IS NOT NULL AND lease_expires_at < now()
    ORDER BY id
    LIMIT 100
    FOR UPDATE SKIP LOCKED
),
done AS (
    UPDATE agent_hub.invocation_outbox o
    SET status = 'failed',
        last_error = 'the calling run stopped before this call_agent child finished',
        finished_at = now(),
        lease_owner = NULL,
        lease_expires_at = NULL
    FROM orphans
    WHERE o.id = orphans.id
    RETURNING o.id, o.job_id
),
jobs AS (
    UPDATE "Job" j
    SET "status" = 'FAILED',
        "completedAt" = now(),
        "errorMessage" = 'the calling run stopped before this call_agent child finished',
        "statusMessage" = 'failed'
    FROM done
    WHERE j."id" = done.job_id AND j."status" IN ('QUEUED', 'PROCESSING')
    RETURNING j."id", j."sessionId"
)
-- hub_events (docs/operations.md): announced by the dispatcher after this commits (dispatcher/events.py).
SELECT done.id, done.job_id, jobs."sessionId" AS session_id, (jobs."id" IS NOT NULL) AS job_failed
FROM done LEFT JOIN jobs ON jobs."id" = done.job_id
ORDER BY done.id
