-- lock_session: HUB_SESSION_POLICY=reject|interrupt. Invokes of one session take their turn for the rest of
-- the transaction, so two prompts sent at once cannot both find the session idle (reject) or each miss the
-- other (interrupt): the second's enqueue statement, run after the first commits, sees the first's row.
SELECT pg_advisory_xact_lock(hashtextextended('agent_hub.session:' || %(session_id)s, 0))
