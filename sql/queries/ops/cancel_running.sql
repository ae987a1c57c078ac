-- cancel_running: the Job of a running row becomes CANCELLED; the dispatcher running
-- it sees that at its next heartbeat, stops relaying and finishes the row cancelled.
-- An event row records the request (the row's own status changes only then).
-- hub_events (docs/operations.md): the caller announces each Job's new status after this commits
-- (dispatcher/events.py).
WITH jobs AS (
    UPDATE "Job" j
    SET "status" = 'CANCELLED', "completedAt" = now(), "statusMessage" = 'cancelled by an operator'
    FROM agent_hub.invocation_outbox o
    WHERE o.id = ANY(%(ids)s::bigint[]) AND o.status = 'running'
      AND j."id" = o.job_id AND j."status" IN ('QUEUED', 'PROCESSING')
    RETURNING o.id, o.attempts, j."id" AS job_id, j."sessionId" AS session_id, j."status"::text AS job_status
),
requested AS (
    INSERT INTO agent_hub.invocation_outbox_event (outbox_id, from_status, to_status, attempts, actor, reason, detail)
    SELECT id, 'running', 'running', attempts, %(actor)s, %(reason)s, '{"requested": "cancel"}'::jsonb
    FROM jobs
)
SELECT id, job_id, session_id, job_status
FROM jobs
ORDER BY id
