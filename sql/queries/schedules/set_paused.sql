-- set_paused: pause (with a reason) or resume one schedule; resuming sets the next due time afresh.
UPDATE agent_hub.schedule
SET paused = %(paused)s,
    paused_reason = %(reason)s,
    next_due_at = coalesce(%(next_due_at)s, next_due_at)
WHERE id = %(id)s
RETURNING id
