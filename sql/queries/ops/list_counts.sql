-- list_counts: how many rows per status among those matching the filters (the
-- status filter is left out so the operator always sees the whole picture).
SELECT o.status::text AS status, count(*) AS n,
       min(o.created_at) AS oldest, max(o.created_at) AS newest
FROM agent_hub.invocation_outbox o
WHERE (%(agent_id)s::text IS NULL OR o.agent_id = %(agent_id)s::text)
  AND (%(since_s)s::float8 IS NULL OR o.created_at >= now() - make_interval(secs => %(since_s)s::float8))
  AND (%(older_s)s::float8 IS NULL OR o.created_at < now() - make_interval(secs => %(older_s)s::float8))
GROUP BY o.status
ORDER BY o.status
