-- claim: take up to %(batch)s due rows, lease them to %(owner)s, and move their Jobs
-- QUEUED -> PROCESSING, all in one statement.
--
-- Due: pending rows whose next_attempt_at has come, and running rows whose lease
-- expired (their dispatcher died). A row is only due when no EARLIER unfinished row
-- of the same session exists and no other row of that session holds a live lease:
-- one run per session at a time, in the order Next.js queued them.
-- SKIP LOCKED lets several dispatchers claim side by side without waiting.
WITH due AS (
    SELECT o.id
    FROM agent_hub.invocation_outbox o
    -- the open rows only: invocation_outbox_open_id_idx (0004) keeps finished rows out of the scan
    WHERE o.status IN ('pending', 'running')
      AND ((o.status = 'pending' AND o.next_attempt_at <= now())
        OR (o.status = 'running' AND o.lease_expires_at < now()
            -- never our own live runs: after a database outage longer than the lease, their leases
            -- are expired until our next heartbeat renews them, and re-claiming would run them twice
            AND NOT (o.id = ANY(%(running)s::bigint[]))
            -- a child (hub.call_agent) only runs inside its caller's run: if that dispatcher
            -- died, sweep_orphans closes the child and the caller's re-run makes a new one
            AND o.parent_id IS NULL))
      AND (o.session_id IS NULL OR NOT EXISTS (
            SELECT 1
            FROM agent_hub.invocation_outbox p
            WHERE p.session_id = o.session_id
              AND p.id <> o.id
              AND p.status IN ('pending', 'running')
              AND (p.id < o.id OR (p.status = 'running' AND p.lease_expires_at >= now()))))
    ORDER BY o.id
    LIMIT %(batch)s
    FOR UPDATE OF o SKIP LOCKED
),
claimed AS (
    UPDATE agent_hub.invocation_outbox o
    SET status = 'running',
        attempts = o.attempts + 1,
        lease_owner = %(owner)s,
        lease_expires_at = now() + make_interval(secs => %(lease_s)s),
        started_at = coalesce(o.started_at, now())
    FROM due
    WHERE o.id = due.id
    RETURNING o.id, o.job_id, o.agent_id, o.session_id, o.user_id, o.prompt, o.attempts, o.max_attempts
),
started AS (
    UPDATE "Job" j
    SET "status" = 'PROCESSING',
        "startedAt" = coalesce(j."startedAt", now()),
        "statusMessage" = 'running'
    FROM claimed c
    WHERE j."id" = c.job_id AND j."status" IN ('QUEUED', 'PROCESSING')
    -- hub_events (docs/operations.md) are sent by the dispatcher after this commits
    -- (dispatcher/events.py: a NOTIFY here would serialise commits, docs/performance.md).
    RETURNING j."id", j."sessionId"
)
SELECT c.*,
       (s."id" IS NOT NULL) AS job_started,
       j."status"::text     AS job_status_before,
       s."sessionId"        AS job_session_id
FROM claimed c
LEFT JOIN started s ON s."id" = c.job_id
LEFT JOIN "Job" j ON j."id" = c.job_id
ORDER BY c.id
