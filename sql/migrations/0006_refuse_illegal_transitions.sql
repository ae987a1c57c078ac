-- The event journal's trigger now refuses a status change the state machine does not have, instead of
-- recording it as 'status changed' (0003, 0005). The allowed moves are dispatcher/states.py's TRANSITIONS:
--   pending   -> running                       claim
--   running   -> running                       reclaim (an expired lease; the trigger fires on the new attempt)
--   running   -> succeeded | failed | cancelled  finish (and sweep_orphans)
--   running   -> pending                       retry_later, release
--   pending   -> cancelled                     cancel (operator)
--   succeeded | failed | cancelled -> pending  replay (operator)
-- tests/integration/test_transitions.py tries every pair against that list. The check is a CASE on OLD and
-- NEW, no lookups: the trigger runs inside every claim and finish. Inserts are not transitions: a row
-- starts pending (ingress) or running (a call_agent child). Same function as 0005 otherwise.
CREATE OR REPLACE FUNCTION agent_hub.invocation_outbox_record_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_actor  TEXT := nullif(current_setting('agenthub.actor', true), '');
    v_reason TEXT := nullif(current_setting('agenthub.reason', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO agent_hub.invocation_outbox_event (outbox_id, from_status, to_status, attempts, actor, reason, detail)
        VALUES (NEW.id, NULL, NEW.status, NEW.attempts, coalesce(v_actor, 'ingress'), coalesce(v_reason, 'queued'),
                jsonb_build_object('max_attempts', NEW.max_attempts));
        RETURN NULL;
    END IF;
    IF NOT (CASE OLD.status  -- parenthesised: IF's condition would otherwise end at the first THEN
        WHEN 'pending' THEN NEW.status IN ('running', 'cancelled')
        WHEN 'running' THEN true
        WHEN 'succeeded' THEN NEW.status = 'pending'
        WHEN 'failed' THEN NEW.status = 'pending'
        WHEN 'cancelled' THEN NEW.status = 'pending'
        ELSE false
    END) THEN
        RAISE EXCEPTION 'invocation_outbox row % cannot go from % to %', NEW.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'invocation_outbox_transition',
                  HINT = 'dispatcher/states.py lists the transitions of an outbox row';
    END IF;
    INSERT INTO agent_hub.invocation_outbox_event (outbox_id, from_status, to_status, attempts, actor, reason, detail)
    VALUES (
        NEW.id, OLD.status, NEW.status, NEW.attempts,
        coalesce(v_actor, 'dispatcher'),
        coalesce(v_reason, CASE
            WHEN OLD.status = 'running' AND NEW.status = 'running' THEN 'lease expired; reclaimed'
            WHEN NEW.status = 'running' THEN 'claimed'
            WHEN OLD.status = 'running' AND NEW.status = 'pending' AND NEW.attempts < OLD.attempts
                THEN 'released at shutdown'
            WHEN OLD.status = 'running' AND NEW.status = 'pending' THEN 'transient fault; retry later'
            WHEN NEW.status IN ('succeeded', 'failed', 'cancelled') THEN 'finished'
            WHEN NEW.status = 'pending' THEN 'replayed'
        END),
        jsonb_strip_nulls(jsonb_build_object(
            'lease_owner', NEW.lease_owner,
            'previous_lease_owner', CASE WHEN OLD.lease_owner IS DISTINCT FROM NEW.lease_owner THEN OLD.lease_owner END,
            'error', CASE WHEN OLD.status = 'running' THEN NEW.last_error END,
            'previous_error', CASE WHEN NEW.last_error IS NULL THEN OLD.last_error END,
            'next_attempt_at', CASE WHEN NEW.status = 'pending' THEN NEW.next_attempt_at END
        ))
    );
    RETURN NULL;
END
$$;
