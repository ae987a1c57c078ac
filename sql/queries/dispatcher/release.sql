-- release: give rows back at shutdown (or after a self-fenced run) so another dispatcher takes them at
-- once. The attempt is not counted: the agent was not at fault. Fenced like a run's writes: only the rows
-- still leased to %(owner)s in the attempts given (%(ids)s and %(attempts)s, pairwise).
WITH back AS (
    UPDATE agent_hub.invocation_outbox
    SET status = 'pending',
        attempts = greatest(attempts - 1, 0),
        next_attempt_at = now(),
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE (id, attempts) IN (SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]))
      AND status = 'running' AND lease_owner = %(owner)s
    RETURNING id, job_id
),
jobs AS (
    UPDATE "Job" j
    SET "status" = 'QUEUED', "statusMessage" = 'waiting: the dispatcher was shutting down'
    FROM back
    WHERE j."id" = back.job_id AND j."status" = 'PROCESSING'
    -- hub_events (docs/operations.md): announced by the dispatcher after this commits (dispatcher/events.py).
    RETURNING j."id", j."sessionId", j."status"::text AS status
)
SELECT back.id, back.job_id, jobs."sessionId" AS session_id, jobs.status AS job_status,
       pg_notify('invocation_outbox', back.id::text)
FROM back LEFT JOIN jobs ON jobs."id" = back.job_id
