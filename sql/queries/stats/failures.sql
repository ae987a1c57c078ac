-- failures: the most frequent failure reasons per agent in the window (first line of last_error, cut to 160
-- characters, so the same fault with different details still groups when its first line does).
SELECT agent_id, reason, n
FROM (
    SELECT o.agent_id, left(split_part(o.last_error, E'\n', 1), 160) AS reason, count(*) AS n,
           row_number() OVER (PARTITION BY o.agent_id ORDER BY count(*) DESC, left(split_part(o.last_error, E'\n', 1), 160)) AS rank
    FROM agent_hub.invocation_outbox o
    WHERE o.created_at >= %(since)s
      AND o.status = 'failed'
      AND (%(agent_id)s::text IS NULL OR o.agent_id = %(agent_id)s::text)
      AND (%(user_id)s::text IS NULL OR o.user_id = %(user_id)s::text)
    GROUP BY o.agent_id, left(split_part(o.last_error, E'\n', 1), 160)
) ranked
WHERE rank <= %(top)s
ORDER BY agent_id, n DESC, reason
