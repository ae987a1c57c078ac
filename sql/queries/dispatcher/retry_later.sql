-- retry_later: running -> pending after a transient fault, with a later
-- next_attempt_at; the Job goes back to QUEUED and says why. When attempts are
-- used up the caller uses finish (failed) instead. Fenced by the run's lease (run_fence.sql).
WITH
--@include dispatcher/run_fence
, back AS (
    UPDATE agent_hub.invocation_outbox
    SET status = 'pending',
        next_attempt_at = now() + make_interval(secs => %(delay_s)s),
        last_error = %(error)s,
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE id = (SELECT id FROM fence)
    RETURNING id, job_id
),
job AS (
    UPDATE "Job" j
    SET "status" = 'QUEUED', "statusMessage" = %(status_message)s
    FROM back
    WHERE j."id" = back.job_id AND j."status" = 'PROCESSING'
    -- hub_events (docs/operations.md): announced by the dispatcher after this commits (dispatcher/events.py).
    RETURNING j."id", j."sessionId", j."status"::text AS status
)
SELECT back.id, job."sessionId" AS session_id, job.status AS job_status
FROM back LEFT JOIN job ON job."id" = back.job_id
