-- show_events: an outbox row's transitions, oldest first.
SELECT id, at, from_status::text AS from_status, to_status::text AS to_status, attempts, actor, reason, detail
FROM agent_hub.invocation_outbox_event
WHERE outbox_id = %(id)s
ORDER BY id
