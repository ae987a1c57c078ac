-- Insert the outbox row and NOTIFY the dispatchers in the same statement (and so
-- the same transaction): the notification is delivered only if this commits.
-- A concurrent duplicate POST loses the race on the UNIQUE job_id and gets no row.
WITH ins AS (
    INSERT INTO invocation_outbox (job_id, agent_id, session_id, user_id, prompt, max_attempts)
    VALUES (%(job_id)s, %(agent_id)s, %(session_id)s, %(user_id)s, %(prompt)s, %(max_attempts)s)
    ON CONFLICT (job_id) DO NOTHING
    RETURNING id, status::text AS status, created_at
)
SELECT id, status, created_at, pg_notify('invocation_outbox', id::text) AS notified
FROM ins
