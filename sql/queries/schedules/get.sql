-- get: one schedule.
SELECT id, cron, tz, every_s, paused FROM agent_hub.schedule WHERE id = %(id)s
