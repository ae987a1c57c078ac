-- select_for_replay: the rows a filtered replay would take (terminal rows only).
SELECT o.id
FROM agent_hub.invocation_outbox o
WHERE o.status = %(status)s::agent_hub.invocation_status
  AND o.status IN ('succeeded', 'failed', 'cancelled')
  AND (%(agent_id)s::text IS NULL OR o.agent_id = %(agent_id)s::text)
  AND (%(since_s)s::float8 IS NULL OR o.created_at >= now() - make_interval(secs => %(since_s)s::float8))
  AND (%(older_s)s::float8 IS NULL OR o.created_at < now() - make_interval(secs => %(older_s)s::float8))
ORDER BY o.id
