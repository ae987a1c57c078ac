-- feed/session: is this session known (the hub's "Session" row, or events of it in the feed)?
SELECT EXISTS (SELECT 1 FROM "Session" s WHERE s."id" = %(session_id)s)
       OR EXISTS (SELECT 1 FROM agent_hub.feed_event e WHERE e.session_id = %(session_id)s) AS known
