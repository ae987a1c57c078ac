-- end_stale_sessions: end the database sessions of dispatchers whose lease on a row expired at least
-- %(grace_s)s ago and that are still inside a transaction begun that long ago. Such a session belongs to a
-- dispatcher paused or frozen mid-transaction: its row locks make the claim's SKIP LOCKED pass the row by,
-- so nobody could reclaim it while the process stays frozen. Postgres's idle_in_transaction_session_timeout
-- does not cover a client frozen in the middle of a pipeline (after its statements, before its Sync: the
-- session stays 'active'), hence this. A dispatcher's sessions are named
-- 'agent-hub-dispatcher… <tag>', the tag being the last %(tag_chars)s characters of its lease owner
-- (dispatcher/maintenance/stale_sessions.py: session_name). Never this dispatcher's own sessions.
WITH stale AS (
    SELECT DISTINCT right(o.lease_owner, %(tag_chars)s) AS tag
    FROM agent_hub.invocation_outbox o
    WHERE o.status = 'running'
      AND o.lease_expires_at < now() - make_interval(secs => %(grace_s)s)
      AND o.lease_owner <> %(owner)s
)
SELECT a.pid, a.application_name, a.state, pg_terminate_backend(a.pid) AS ended
FROM pg_stat_activity a
JOIN stale s ON right(a.application_name, %(tag_chars)s + 1) = ' ' || s.tag
WHERE a.datname = current_database()
  AND a.application_name LIKE 'agent-hub-dispatcher%%'
  AND a.pid <> pg_backend_pid()
  AND a.xact_start < now() - make_interval(secs => %(grace_s)s)
ORDER BY a.pid
