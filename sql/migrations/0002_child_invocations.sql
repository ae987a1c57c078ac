-- Child invocations: hub.call_agent runs another agent inline, inside the caller's run.
-- The child gets its own outbox row (and its own Job) so it is visible, logged and has
-- a final status, linked to the caller's row. Top-level rows keep parent_id NULL and depth 0.

ALTER TABLE invocation_outbox
    -- The caller's row. Children are inserted already 'running' and leased to the
    -- dispatcher running the caller, which runs them in the caller's thread.
    ADD COLUMN parent_id   BIGINT REFERENCES invocation_outbox (id),
    -- 0 for a top-level invocation, the caller's depth + 1 for a child.
    ADD COLUMN depth       INTEGER NOT NULL DEFAULT 0 CHECK (depth >= 0),
    -- Agent ids from the top-level invocation down to this row's agent (cycle check).
    -- Empty for top-level rows: their chain is just their own agent_id.
    ADD COLUMN agent_chain TEXT[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT invocation_outbox_child_ck CHECK ((parent_id IS NULL) = (depth = 0));

-- "The children of this run" (operator views, tests).
CREATE INDEX invocation_outbox_parent_idx ON invocation_outbox (parent_id) WHERE parent_id IS NOT NULL;
