-- feed/session_after: a session stream's next events, oldest first: the events of every job of the session
-- with an id above %(after)s, at most %(limit)s (feed_event_session_idx, from %(after)s on).
SELECT id, kind, payload::text AS data, false AS terminal
FROM agent_hub.feed_event
WHERE session_id = %(session_id)s AND id > %(after)s
ORDER BY id
LIMIT %(limit)s
