-- list: every schedule, oldest first, with its last run's Job status.
SELECT s.id, s.agent_id, s.user_id, s.prompt, s.cron, s.tz, s.every_s, s.session_mode, s.session_id, s.paused,
       s.paused_reason, s.next_due_at, s.last_fired_at, s.last_job_id, s.runs, s.created_at,
       j."status"::text AS last_job_status
FROM agent_hub.schedule s
LEFT JOIN "Job" j ON j."id" = s.last_job_id
ORDER BY s.id
