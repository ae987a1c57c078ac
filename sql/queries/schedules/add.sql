-- add: a new schedule; its first due time is computed by dispatcher/schedules.py.
INSERT INTO agent_hub.schedule (agent_id, user_id, prompt, cron, tz, every_s, session_mode, session_id, next_due_at)
VALUES (%(agent_id)s, %(user_id)s, %(prompt)s, %(cron)s, %(tz)s, %(every_s)s, %(session_mode)s, %(session_id)s,
        %(next_due_at)s)
RETURNING id
