-- Every object of this service lives in the schema agent_hub (core/migrate.py applies each migration file
-- there, and moves an installation from before this change out of public first), so the hub's own
-- `prisma migrate dev`, `db push` and `migrate diff` never see it.
--
-- The event trigger's function resolved invocation_outbox_event through the caller's search_path, which no
-- longer finds our tables: it now names them. Same behaviour as 0003 otherwise.
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
            ELSE 'status changed'
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
