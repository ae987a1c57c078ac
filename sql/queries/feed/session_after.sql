-- feed/session_after: a session stream's next events, oldest first: the events of every job of the session
-- with an id above %(after)s (feed_event_session_idx, from %(after)s on), at most %(limit)s of them and, past
-- the first, only while the page holds under %(max_chars)s characters of data (as feed/job_after.sql).
SELECT p.id, p.kind, p.data, false AS terminal
FROM (
    SELECT e.id, e.kind, e.payload::text AS data,
           sum(length(e.payload::text)) OVER (ORDER BY e.id) AS upto
    FROM (SELECT * FROM agent_hub.feed_event
          WHERE session_id = %(session_id)s AND id > %(after)s
          ORDER BY id
          LIMIT %(limit)s) e
) p
WHERE p.upto - length(p.data) < %(max_chars)s
ORDER BY p.id
