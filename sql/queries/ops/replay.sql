-- replay: terminal rows back to pending with a fresh attempt budget, their Jobs back
-- to QUEUED, and a NOTIFY so a dispatcher takes them at once. The previous error is
-- kept in the event row (the trigger records it as previous_error).
-- hub_events (docs/operations.md): the caller announces each Job's new status after this commits
-- (dispatcher/events.py), from the job_id, session_id and job_status returned here.
WITH back AS (
    UPDATE agent_hub.invocation_outbox
    SET status = 'pending',
        attempts = 0,
        next_attempt_at = now(),
        last_error = NULL,
        result = NULL,
        started_at = NULL,
        finished_at = NULL
    WHERE id = ANY(%(ids)s::bigint[]) AND status IN ('succeeded', 'failed', 'cancelled')
    RETURNING id, job_id
),
jobs AS (
    UPDATE "Job" j
    SET "status" = 'QUEUED',
        "progress" = 0,
        "errorMessage" = NULL,
        "completedAt" = NULL,
        "startedAt" = NULL,
        "statusMessage" = 'queued again by an operator'
    FROM back
    WHERE j."id" = back.job_id
    RETURNING j."id", j."sessionId", j."status"::text AS status
)
SELECT back.id, back.job_id, jobs."sessionId" AS session_id, jobs.status AS job_status,
       pg_notify('invocation_outbox', back.id::text) AS notified
FROM back
LEFT JOIN jobs ON jobs."id" = back.job_id
ORDER BY back.id
