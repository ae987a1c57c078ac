-- finish: running -> succeeded|failed|cancelled, and the Job to the matching final
-- status, in ONE statement (so one transaction). Fenced by the run's lease (run_fence.sql: owner and
-- attempt): a dispatcher that lost its lease cannot overwrite the new owner's work, nor log into it.
-- The run's last JobLog lines (%(log_levels)s/%(log_messages)s/%(log_ats)s, in order; times from the run's
-- LineClock, dispatcher/line_clock.py) ride in the same statement:
-- one statement instead of three on the hot path (docs/performance.md).
WITH
--@include dispatcher/run_fence
, logs AS (
    INSERT INTO "JobLog" ("id", "level", "message", "timestamp", "jobId")
    SELECT l.id, l.level, l.message, l.at, %(job_id)s
    FROM unnest(%(log_ids)s::text[], %(log_levels)s::text[], %(log_messages)s::text[], %(log_ats)s::timestamptz[])
         WITH ORDINALITY AS l (id, level, message, at, n)
    CROSS JOIN fence
    ORDER BY l.n
),
done AS (
    UPDATE agent_hub.invocation_outbox
    SET status = %(status)s::agent_hub.invocation_status,
        result = %(result)s,
        last_error = %(error)s,
        finished_at = now(),
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE id = (SELECT id FROM fence)
    RETURNING id, job_id
),
job AS (
    UPDATE "Job" j
    SET "status" = %(job_status)s::"JobStatus",
        "completedAt" = now(),
        "progress" = CASE WHEN %(job_status)s = 'SUCCEEDED' THEN 100 ELSE j."progress" END,
        "errorMessage" = %(error)s,
        "statusMessage" = %(status_message)s
    FROM done
    WHERE j."id" = done.job_id AND j."status" IN ('QUEUED', 'PROCESSING')
    -- hub_events (docs/operations.md): announced by the dispatcher after this commits (dispatcher/events.py).
    RETURNING j."id", j."sessionId", j."status"::text AS status
)
SELECT done.id, job."sessionId" AS session_id, job.status AS job_status
FROM done LEFT JOIN job ON job."id" = done.job_id
