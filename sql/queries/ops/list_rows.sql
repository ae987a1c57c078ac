-- list_rows: the newest rows matching the filters, with their Job's status.
SELECT o.id, o.job_id, o.agent_id, o.status::text AS status, o.attempts, o.max_attempts,
       o.created_at, o.finished_at, o.lease_owner, o.last_error,
       j."status"::text AS job_status
FROM agent_hub.invocation_outbox o
LEFT JOIN "Job" j ON j."id" = o.job_id
WHERE (%(status)s::agent_hub.invocation_status IS NULL OR o.status = %(status)s::agent_hub.invocation_status)
  AND (%(agent_id)s::text IS NULL OR o.agent_id = %(agent_id)s::text)
  AND (%(since_s)s::float8 IS NULL OR o.created_at >= now() - make_interval(secs => %(since_s)s::float8))
  AND (%(older_s)s::float8 IS NULL OR o.created_at < now() - make_interval(secs => %(older_s)s::float8))
ORDER BY o.id DESC
LIMIT %(limit)s
