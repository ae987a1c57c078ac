-- feed/job_after: a job stream's next events, oldest first: the job's events with an id above %(after)s
-- (feed_event_job_idx, from %(after)s on), at most %(limit)s of them and, past the first, only while the
-- page holds under %(max_chars)s characters of data, so one page of big messages stays small.
-- `data` is the SSE data as stored; `terminal`: a status after which the job stream may end.
SELECT p.id, p.kind, p.data, p.terminal
FROM (
    SELECT e.id, e.kind, e.payload::text AS data,
           e.kind = 'status' AND e.payload ->> 'status' IN ('SUCCEEDED', 'FAILED', 'CANCELLED') AS terminal,
           sum(length(e.payload::text)) OVER (ORDER BY e.id) AS upto
    FROM (SELECT * FROM agent_hub.feed_event
          WHERE job_id = %(job_id)s AND id > %(after)s
          ORDER BY id
          LIMIT %(limit)s) e
) p
WHERE p.upto - length(p.data) < %(max_chars)s
ORDER BY p.id
