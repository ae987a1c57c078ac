-- claim_due_rule: which open rows are due (a WHERE condition on the outbox as `o`; included by claim.sql and
-- claim_fair.sql). Due: pending rows whose next_attempt_at has come, and running rows whose lease expired
-- (their dispatcher died). A row is only due when no EARLIER unfinished row of the same session exists and no
-- other row of that session holds a live lease: one run per session at a time, in the order Next.js queued them.
    -- the open rows only: invocation_outbox_open_id_idx (0004) keeps finished rows out of the scan
    o.status IN ('pending', 'running')
      AND ((o.status = 'pending' AND o.next_attempt_at <= now())
        OR (o.status = 'running' AND o.lease_expires_at < now()
            -- never our own live runs: after a database outage longer than the lease, their leases
            -- are expired until our next heartbeat renews them, and re-claiming would run them twice
            AND NOT (o.id = ANY(%(running)s::bigint[]))
            -- a child (hub.call_agent) only runs inside its caller's run: if that dispatcher
            -- died, sweep_orphans closes the child and the caller's re-run makes a new one
            AND o.parent_id IS NULL))
      AND (o.session_id IS NULL OR NOT EXISTS (
            SELECT 1
            FROM agent_hub.invocation_outbox p
            WHERE p.session_id = o.session_id
              AND p.id <> o.id
              AND p.status IN ('pending', 'running')
              AND (p.id < o.id OR (p.status = 'running' AND p.lease_expires_at >= now()))))
