-- claim_fair: the claim when DISPATCHER_MAX_RUNNING_PER_USER or DISPATCHER_MAX_RUNNING_PER_AGENT is set. Of the
-- due rows (claim_due_rule.sql), those that would take their user or agent past its cap of live runs are left
-- for later, and the rest go in order of their user's load (live runs + earlier picks of this claim), then
-- queue order: a user with a backlog does not hold back another user's first prompt by more than one slot.
-- The caps count live runs of every dispatcher; dispatcher/claim.py runs this under a transaction-scoped
-- advisory lock (claim_lock.sql) so two dispatchers' claims cannot both take the last slot of one user.
-- call_agent children run inside their caller's slot and are not counted.
WITH live AS (
    SELECT user_id, agent_id
    FROM agent_hub.invocation_outbox
    WHERE status = 'running' AND lease_expires_at >= now() AND parent_id IS NULL
),
per_user AS (SELECT user_id, count(*) AS n FROM live GROUP BY user_id),
per_agent AS (SELECT agent_id, count(*) AS n FROM live GROUP BY agent_id),
candidates AS (
    SELECT o.id,
           coalesce(u.n, 0) + row_number() OVER (PARTITION BY o.user_id ORDER BY o.id) AS user_load,
           coalesce(a.n, 0) + row_number() OVER (PARTITION BY o.agent_id ORDER BY o.id) AS agent_load
    FROM agent_hub.invocation_outbox o
    LEFT JOIN per_user u ON u.user_id = o.user_id
    LEFT JOIN per_agent a ON a.agent_id = o.agent_id
    WHERE
--@include dispatcher/claim_due_rule
),
due AS (
    SELECT o.id
    FROM agent_hub.invocation_outbox o
    JOIN candidates c ON c.id = o.id
    WHERE (%(max_per_user)s = 0 OR c.user_load <= %(max_per_user)s)
      AND (%(max_per_agent)s = 0 OR c.agent_load <= %(max_per_agent)s)
    ORDER BY c.user_load, o.id
    LIMIT %(batch)s
    FOR UPDATE OF o SKIP LOCKED
),
--@include dispatcher/claim_take
