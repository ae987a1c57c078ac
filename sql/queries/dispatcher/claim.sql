-- claim: take up to %(batch)s due rows (claim_due_rule.sql) in queue order, lease them to %(owner)s, and move
-- their Jobs QUEUED -> PROCESSING, all in one statement. SKIP LOCKED lets several dispatchers claim side by
-- side without waiting. With per-user or per-agent caps the dispatcher uses claim_fair.sql instead.
WITH due AS (
    SELECT o.id
    FROM agent_hub.invocation_outbox o
    WHERE
--@include dispatcher/claim_due_rule
    ORDER BY o.id
    LIMIT %(batch)s
    FOR UPDATE OF o SKIP LOCKED
),
--@include dispatcher/claim_take
