-- agents: per agent, the invocations queued in the window [%(since)s, now] (top-level and call_agent children),
-- read through invocation_outbox_created_agent_idx: the cost follows the window, not the history.
-- Run time is the last attempt's (started_at .. finished_at); LLM figures come from the row's result
-- (dispatcher/calls.py records them there).
WITH runs AS (
    SELECT o.agent_id, o.status::text AS status, o.attempts, o.parent_id,
           extract(epoch FROM (o.finished_at - o.started_at)) * 1000 AS run_ms,
           coalesce((o.result -> 'llm' ->> 'calls')::int, 0) AS llm_calls,
           coalesce((o.result -> 'llm' ->> 'prompt_tokens')::bigint, 0) AS prompt_tokens,
           coalesce((o.result -> 'llm' ->> 'output_tokens')::bigint, 0) AS output_tokens
    FROM agent_hub.invocation_outbox o
    WHERE o.created_at >= %(since)s
      AND (%(agent_id)s::text IS NULL OR o.agent_id = %(agent_id)s::text)
      AND (%(user_id)s::text IS NULL OR o.user_id = %(user_id)s::text)
)
SELECT r.agent_id,
       a."name" AS agent_name,
       count(*) AS runs,
       count(*) FILTER (WHERE r.parent_id IS NOT NULL) AS as_child,
       count(*) FILTER (WHERE r.status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE r.status = 'failed') AS failed,
       count(*) FILTER (WHERE r.status = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE r.status IN ('pending', 'running')) AS open,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY r.run_ms) FILTER (WHERE r.status = 'succeeded') AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.run_ms) FILTER (WHERE r.status = 'succeeded') AS p95_ms,
       sum(r.attempts) AS attempts,
       count(*) FILTER (WHERE r.attempts > 1) AS retried,
       sum(r.llm_calls) AS llm_calls,
       sum(r.prompt_tokens) AS prompt_tokens,
       sum(r.output_tokens) AS output_tokens
FROM runs r
LEFT JOIN "Agent" a ON a."id" = r.agent_id
GROUP BY r.agent_id, a."name"
ORDER BY count(*) DESC, r.agent_id
