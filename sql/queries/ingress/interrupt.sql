-- interrupt: HUB_SESSION_POLICY=interrupt. A newer prompt of the session was just queued as row
-- %(new_id)s: every older row of the session still waiting is cancelled with its Job, and the Job of
-- the one running becomes CANCELLED, which its dispatcher sees at its next heartbeat and stops the run
-- (the hub's cancel line ends the agent's process); the new row then runs next. Run inside the
-- enqueue's transaction, under the session's lock (lock_session.sql). An event row records each cancel
-- request on the running row (its status changes only when its dispatcher finishes it).
-- hub_events (docs/operations.md): the caller announces each Job's new status after this commits.
WITH waiting AS (
    UPDATE agent_hub.invocation_outbox
    SET status = 'cancelled',
        finished_at = now(),
        result = jsonb_build_object('cancelled_by', 'ingress', 'interrupted_by', %(job_id)s::text)
    WHERE session_id = %(session_id)s AND status = 'pending' AND id < %(new_id)s
    RETURNING id, job_id
),
running AS (
    SELECT id, job_id, attempts
    FROM agent_hub.invocation_outbox
    WHERE session_id = %(session_id)s AND status = 'running' AND id < %(new_id)s
),
jobs AS (
    UPDATE "Job" j
    SET "status" = 'CANCELLED', "completedAt" = now(), "statusMessage" = 'interrupted by a newer prompt'
    WHERE j."id" IN (SELECT job_id FROM waiting UNION ALL SELECT job_id FROM running)
      AND j."status" IN ('QUEUED', 'PROCESSING')
    RETURNING j."id", j."sessionId", j."status"::text AS status
),
requested AS (
    INSERT INTO agent_hub.invocation_outbox_event (outbox_id, from_status, to_status, attempts, actor, reason, detail)
    SELECT running.id, 'running', 'running', running.attempts, 'ingress', 'interrupted by a newer prompt',
           jsonb_build_object('requested', 'cancel', 'interrupted_by', %(job_id)s::text)
    FROM running
    JOIN jobs ON jobs."id" = running.job_id
)
SELECT jobs."id" AS job_id, jobs."sessionId" AS session_id, jobs.status AS job_status
FROM jobs
ORDER BY jobs."id"
