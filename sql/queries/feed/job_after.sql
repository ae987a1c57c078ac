-- feed/job_after: a job stream's next events, oldest first: the job's events with an id above %(after)s,
-- at most %(limit)s (feed_event_job_idx, from %(after)s on). `data` is the SSE data as stored.
SELECT id, kind, payload::text AS data,
       kind = 'status' AND payload ->> 'status' IN ('SUCCEEDED', 'FAILED', 'CANCELLED') AS terminal
FROM agent_hub.feed_event
WHERE job_id = %(job_id)s AND id > %(after)s
ORDER BY id
LIMIT %(limit)s
