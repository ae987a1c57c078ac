-- lock_rows: lock the named rows for a replay/cancel, with their Job's status. The
-- claim query uses SKIP LOCKED, so a dispatcher passes over them until we commit.
SELECT o.id, o.job_id, o.status::text AS status, j."id" IS NOT NULL AS job_exists, j."status"::text AS job_status
FROM agent_hub.invocation_outbox o
LEFT JOIN "Job" j ON j."id" = o.job_id
WHERE o.id = ANY(%(ids)s::bigint[])
ORDER BY o.id
FOR UPDATE OF o
