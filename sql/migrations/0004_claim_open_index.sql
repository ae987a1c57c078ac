-- Indexes for an outbox that keeps its history.
--
-- The claim takes due rows in id order. With only the indexes of 0001, the planner could walk the
-- primary key from the first row ever queued, filtering out every finished row on the way, so each
-- claim got slower as the table grew (docs/performance.md). This partial index holds only the open
-- rows, the ones a claim can take; the claim's WHERE repeats its predicate so the planner can use it.
CREATE INDEX invocation_outbox_open_id_idx
    ON invocation_outbox (id) WHERE status IN ('pending', 'running');

-- Superseded by the index above: the claim was their only reader. Dropping the lease index also
-- makes a heartbeat (which only moves lease_expires_at) a HOT update that touches no index.
DROP INDEX invocation_outbox_pending_idx;
DROP INDEX invocation_outbox_running_lease_idx;
