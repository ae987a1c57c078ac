-- cancel_pending: a row nobody runs yet goes straight to cancelled, with its Job.
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
    -- hub_events (docs/operations.md): the Job's status change, in this transaction.
    RETURNING j."id", pg_notify('hub_events', json_build_object('kind', 'status', 'job_id', j."id", 'session_id', j."sessionId",
                                          'status', j."status")::text)
)
SELECT id FROM done ORDER BY id
