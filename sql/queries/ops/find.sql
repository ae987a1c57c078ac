-- find: outbox rows named by an operator, each by outbox id or by jobId.
SELECT o.id, o.job_id, o.agent_id, o.session_id, o.user_id, length(o.prompt) AS prompt_chars,
       o.status::text AS status, o.attempts, o.max_attempts, o.next_attempt_at,
       o.lease_owner, o.lease_expires_at, o.last_error, o.result,
       o.created_at, o.started_at, o.finished_at,
       j."status"::text AS job_status
FROM agent_hub.invocation_outbox o
LEFT JOIN "Job" j ON j."id" = o.job_id
WHERE o.id = ANY(%(ids)s::bigint[]) OR o.job_id = ANY(%(job_ids)s::text[])
ORDER BY o.id
