-- cancel_pending: a row nobody runs yet goes straight to cancelled, with its Job.
-- hub_events (docs/operations.md): the caller announces each Job's new status after this commits
-- (dispatcher/events.py); job_status is NULL when the Job did not move.
WITH done AS (
    UPDATE agent_hub.invocation_outbox
    SET status = 'cancelled',
        finished_at = now(),
        result = jsonb_build_object('cancelled_by', %(actor)s::text)
    WHERE id = ANY(%(ids)s::bigint[]) AND status = 'pending'
    RETURNING id, job_id
),
jobs AS (
    UPDATE "Job" j
    SET "status" = 'CANCELLED', "completedAt" = now(), "statusMessage" = 'cancelled by an operator'
    FROM done
    WHERE j."id" = done.job_id AND j."status" IN ('QUEUED', 'PROCESSING')
    RETURNING j."id", j."sessionId", j."status"::text AS status
)
SELECT done.id, done.job_id, jobs."sessionId" AS session_id, jobs.status AS job_status
FROM done
LEFT JOIN jobs ON jobs."id" = done.job_id
ORDER BY done.id
