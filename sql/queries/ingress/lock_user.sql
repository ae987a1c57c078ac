-- lock_user: INGRESS_RATE_PER_USER. A user's invokes take their turn for the rest of the transaction, so
-- prompts sent at once are counted one after the other and cannot together pass the rate.
SELECT pg_advisory_xact_lock(hashtextextended('agent_hub.user:' || %(user_id)s, 0))
