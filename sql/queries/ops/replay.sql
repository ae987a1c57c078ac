-- replay: terminal rows back to pending with a fresh attempt budget, their Jobs back
-- to QUEUED, and a NOTIFY so a dispatcher takes them at once. The previous error is
-- kept in the event row (the trigger records it as previous_error).
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
    -- hub_events (docs/operations.md): the Job's status change, in this transaction.
    RETURNING j."id", pg_notify('hub_events', json_build_object('kind', 'status', 'job_id', j."id", 'session_id', j."sessionId",
                                          'status', j."status")::text)
)
SELECT back.id, pg_notify('invocation_outbox', back.id::text) AS notified
FROM back
ORDER BY back.id
