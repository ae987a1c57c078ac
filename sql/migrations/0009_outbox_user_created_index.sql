-- INGRESS_RATE_PER_USER (ingress/admission.py): the invoke endpoint counts a user's invocations queued in the
-- rate's window. This index makes that count read only that user's rows of the window, however long the
-- history. call_agent children (parent_id set) are not the user's prompts: they are not counted, nor indexed.
-- Named without a schema: core/migrate.py applies this file in agent_hub.
CREATE INDEX invocation_outbox_user_created_idx
    ON invocation_outbox (user_id, created_at) WHERE parent_id IS NULL;
