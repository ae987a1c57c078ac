-- remove: delete one schedule (the runs it made stay: they are ordinary Jobs and outbox rows).
DELETE FROM agent_hub.schedule WHERE id = %(id)s RETURNING id
