-- cancel_running: the Job of a running row becomes CANCELLED; the dispatcher running
-- it sees that at its next heartbeat, stops relaying and finishes the row cancelled.
-- An event row records the request (the row's own status changes only then).
WITH jobs AS (
    UPDATE "Job" j
    SET "status" = 'CANCELLED', "completedAt" = now(), "statusMessage" = 'cancelled by an operator'
    FROM agent_hub.invocation_outbox o
    WHERE o.id = ANY(%(ids)s::bigint[]) AND o.status = 'running'
      AND j."id" = o.job_id AND j."status" IN ('QUEUED', 'PROCESSING')
    -- hub_events (docs/operations.md): the Job's status change, in this transaction.
    RETURNING o.id, o.attempts, pg_notify('hub_events', json_build_object('kind', 'status', 'job_id', j."id", 'session_id', j."sessionId",
                                          'status', j."status")::text)
)
INSERT INTO agent_hub.invocation_outbox_event (outbox_id, from_status, to_status, attempts, actor, reason, detail)
SELECT id, 'running', 'running', attempts, %(actor)s, %(reason)s, '{"requested": "cancel"}'::jsonb
FROM jobs
RETURNING outbox_id AS id
