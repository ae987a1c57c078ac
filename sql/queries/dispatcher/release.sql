-- release: give rows back at shutdown so another dispatcher takes them at once.
-- The attempt is not counted: the agent was not at fault.
WITH back AS (
    UPDATE invocation_outbox
    SET status = 'pending',
        attempts = greatest(attempts - 1, 0),
        next_attempt_at = now(),
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE id = ANY(%(ids)s) AND status = 'running' AND lease_owner = %(owner)s
    RETURNING id, job_id
),
jobs AS (
    UPDATE "Job" j
    SET "status" = 'QUEUED', "statusMessage" = 'waiting: the dispatcher was shutting down'
    FROM back
    WHERE j."id" = back.job_id AND j."status" = 'PROCESSING'
    -- hub_events (docs/operations.md): the Job's status change, in this transaction.
    RETURNING j."id", pg_notify('hub_events', json_build_object('kind', 'status', 'job_id', j."id", 'session_id', j."sessionId",
                                          'status', j."status")::text)
)
SELECT id, pg_notify('invocation_outbox', id::text) FROM back
