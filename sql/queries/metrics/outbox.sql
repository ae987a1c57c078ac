-- outbox: rows per status and, per status, the age of its oldest row (for /metrics, at scrape time).
-- Uses invocation_outbox_status_created_idx.
SELECT o.status::text AS status,
       count(*) AS n,
       extract(epoch FROM now() - min(o.created_at))::float8 AS oldest_age_s
FROM agent_hub.invocation_outbox o
GROUP BY o.status
