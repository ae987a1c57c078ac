-- claim_take: lease the rows of the `due` CTE to %(owner)s, move their Jobs QUEUED -> PROCESSING and append
-- their PROCESSING feed events (claim_feed.sql), all in the one statement (the tail of claim.sql and
-- claim_fair.sql, after their `due` CTE and a comma). `feed_id`: the row's feed event, NULL when its Job did
-- not move out of QUEUED (a reclaimed PROCESSING Job said so already).
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
),
taken AS (
    SELECT c.*,
           (s."id" IS NOT NULL) AS job_started,
           j."status"::text     AS job_status_before,
           s."sessionId"        AS job_session_id
    FROM claimed c
    LEFT JOIN started s ON s."id" = c.job_id
    LEFT JOIN "Job" j ON j."id" = c.job_id
),
--@include dispatcher/claim_feed
SELECT t.*, f.id AS feed_id
FROM taken t
LEFT JOIN fed f ON f.job_id = t.job_id
CROSS JOIN (SELECT count(*) FROM fed_woken) w  -- a SELECT CTE runs only when read: this sends the NOTIFYs
ORDER BY t.id
