-- The outbox's history: one row per status transition of an invocation_outbox row
-- (including a lease reclaim, running -> running with a new attempt), written by a
-- trigger on OUR table so no code path can forget it. Operators read it with
-- `python -m dispatcher show`; replays and cancels record who did them and why.
--
-- Who/why come from transaction-local settings the operator CLI sets with
-- set_config('agenthub.actor' | 'agenthub.reason', ..., true); without them the
-- actor is the ingress (insert) or the dispatcher (updates) and the reason is
-- derived from the transition itself.

CREATE TABLE invocation_outbox_event (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id   BIGINT NOT NULL REFERENCES invocation_outbox (id) ON DELETE CASCADE,
    at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    from_status invocation_status,          -- NULL for the insert
    to_status   invocation_status NOT NULL,
    attempts    INTEGER NOT NULL,           -- the row's attempts after the transition
    actor       TEXT NOT NULL,
    reason      TEXT,
    detail      JSONB NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX invocation_outbox_event_outbox_idx ON invocation_outbox_event (outbox_id, id);

-- Kept to one INSERT with no lookups: it runs inside every claim/finish on the hot path.
CREATE FUNCTION invocation_outbox_record_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_actor  TEXT := nullif(current_setting('agenthub.actor', true), '');
    v_reason TEXT := nullif(current_setting('agenthub.reason', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO invocation_outbox_event (outbox_id, from_status, to_status, attempts, actor, reason, detail)
        VALUES (NEW.id, NULL, NEW.status, NEW.attempts, coalesce(v_actor, 'ingress'), coalesce(v_reason, 'queued'),
                jsonb_build_object('max_attempts', NEW.max_attempts));
        RETURN NULL;
    END IF;
    INSERT INTO invocation_outbox_event (outbox_id, from_status, to_status, attempts, actor, reason, detail)
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

CREATE TRIGGER invocation_outbox_event_insert
    AFTER INSERT ON invocation_outbox
    FOR EACH ROW EXECUTE FUNCTION invocation_outbox_record_event();

-- Heartbeats only touch lease_expires_at, so they never fire this; a claim that
-- re-sets 'running' on a reclaimed row does (its attempts change).
CREATE TRIGGER invocation_outbox_event_update
    AFTER UPDATE OF status ON invocation_outbox
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.attempts IS DISTINCT FROM NEW.attempts)
    EXECUTE FUNCTION invocation_outbox_record_event();
