-- prune: delete up to %(batch)s finished invocations that finished more than %(older_s)s seconds ago,
-- each with its whole tree of call_agent children, (ON DELETE CASCADE) its event history, and the feed
-- events of their jobs (agent_hub.feed_event, keyed by job id: the SSE streams' replay of those runs).
-- Only top-level rows are picked, and only when no row of their tree is still pending or running;
-- one statement deletes a tree at once, so the parent_id foreign key holds at its end.
-- The hub's own rows (Job, ChatMessage, JobLog) belong to Prisma and are never touched.
-- Batches walk the table in id order: %(after)s is the last root id the previous batch looked at.
-- %(dry_run)s: count what would go, delete nothing.
WITH RECURSIVE roots AS (
    SELECT o.id
    FROM agent_hub.invocation_outbox o
    WHERE o.parent_id IS NULL
      AND o.id > %(after)s
      AND o.status IN ('succeeded', 'failed', 'cancelled')
      AND o.finished_at < now() - make_interval(secs => %(older_s)s::float8)
    ORDER BY o.id
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
),
tree AS (
    SELECT r.id, r.id AS root FROM roots r
    UNION ALL
    SELECT c.id, t.root FROM agent_hub.invocation_outbox c JOIN tree t ON c.parent_id = t.id
),
ready AS (
    SELECT t.id
    FROM tree t
    WHERE NOT EXISTS (
        SELECT 1 FROM tree u JOIN agent_hub.invocation_outbox x ON x.id = u.id
        WHERE u.root = t.root AND x.status IN ('pending', 'running'))
),
gone AS (
    DELETE FROM agent_hub.invocation_outbox o
    USING ready
    WHERE o.id = ready.id AND NOT %(dry_run)s::boolean
    RETURNING o.id, o.job_id
),
feed_gone AS (
    DELETE FROM agent_hub.feed_event e
    USING gone
    WHERE e.job_id = gone.job_id
    RETURNING e.id
)
SELECT (SELECT count(*) FROM roots) AS roots_seen,
       (SELECT max(id) FROM roots) AS last_root,
       (SELECT count(*) FROM ready) AS rows_ready,
       (SELECT count(*) FROM gone) AS rows_deleted,
       (SELECT count(*) FROM feed_gone) AS feed_events_deleted
