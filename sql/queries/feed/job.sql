-- feed/job: what a job stream needs to open and to end: whether the job is known (the hub's "Job" row, or
-- events of it in the feed, which outlive a deleted Job until prune), its session, its state in the hub,
-- and the feed's last event of it (is it the terminal status?).
SELECT j."id" IS NOT NULL OR last.id IS NOT NULL AS known,
       coalesce(j."sessionId", last.session_id) AS session_id,
       j."status"::text AS job_status,
       j."errorMessage" AS error_message,
       last.id AS last_id,
       coalesce(last.terminal, false) AS last_terminal
FROM (SELECT %(job_id)s::text AS id) want
LEFT JOIN "Job" j ON j."id" = want.id
LEFT JOIN LATERAL (
    SELECT e.id, e.session_id,
           e.kind = 'status' AND e.payload ->> 'status' IN ('SUCCEEDED', 'FAILED', 'CANCELLED') AS terminal
    FROM agent_hub.feed_event e
    WHERE e.job_id = want.id
    ORDER BY e.id DESC
    LIMIT 1
) last ON true
