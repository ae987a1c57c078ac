-- finish: running -> succeeded|failed|cancelled, and the Job to the matching final
-- status, in ONE statement (so one transaction). Fenced by the lease owner: a
-- dispatcher that lost its lease cannot overwrite the new owner's work.
WITH done AS (
    UPDATE invocation_outbox
    SET status = %(status)s::invocation_status,
        result = %(result)s,
        last_error = %(error)s,
        finished_at = now(),
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE id = %(id)s AND status = 'running' AND lease_owner = %(owner)s
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
    -- hub_events (docs/operations.md): the Job's status change, in this transaction.
    RETURNING j."id", pg_notify('hub_events', json_build_object('kind', 'status', 'job_id', j."id", 'session_id', j."sessionId",
                                          'status', j."status")::text)
)
SELECT done.id, (SELECT count(*) FROM job) AS jobs_updated FROM done
