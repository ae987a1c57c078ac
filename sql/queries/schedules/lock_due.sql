-- lock_due: due, active schedules, locked for this transaction; another dispatcher skips them (and then finds
-- them no longer due once this one commits their next due time).
SELECT id, agent_id, user_id, prompt, cron, tz, every_s, session_mode, session_id, next_due_at
FROM agent_hub.schedule
WHERE NOT paused AND next_due_at <= now()
ORDER BY next_due_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
