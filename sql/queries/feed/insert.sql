-- feed/insert: append a batch of events to agent_hub.feed_event, in the order given, and wake the web
-- processes' streams with one NOTIFY hub_feed per (session, job) of the batch, carrying its highest id:
--   {"sessionId": <text or null>, "jobId": <text>, "id": <bigint>}
-- Run it in the transaction of the change the events announce (core/feed.py: insert_events); the rows and
-- the NOTIFYs then commit, or not, with it. %(notify)s false leaves the NOTIFYs out (the caller wakes the
-- streams after its commit: the dispatcher's events sender, events/send_batch.sql, so its transaction keeps its place in group commit).
--
-- Ids follow commit order within a stream key (the session, or the job when it has none): before drawing
-- any id the statement takes a transaction-scoped advisory lock per key of the batch (class 0x4645, in key
-- order, so two batches cannot deadlock on each other), held to commit. A reader that has seen id N of a
-- session therefore never later finds a smaller id of it committing: resuming after N misses nothing.
-- (Keep to one call per transaction, or the same keys in each call: keys locked in another order by a
-- second statement could deadlock against another writer.)
WITH input AS (
    SELECT t.job_id, t.session_id, t.kind, t.payload::jsonb AS payload, t.n
    FROM unnest(%(job_ids)s::text[], %(session_ids)s::text[], %(kinds)s::text[], %(payloads)s::text[])
         WITH ORDINALITY AS t(job_id, session_id, kind, payload, n)
),
locked AS MATERIALIZED (
    -- An aggregate: every lock is taken before its single row exists, so before the first id is drawn.
    SELECT count(pg_advisory_xact_lock(17989, hashtext(k.key))) AS n
    FROM (SELECT DISTINCT coalesce(session_id, job_id) AS key FROM input ORDER BY 1) k
),
inserted AS (
    INSERT INTO agent_hub.feed_event (job_id, session_id, kind, payload)
    SELECT i.job_id, i.session_id, i.kind, i.payload
    FROM input i CROSS JOIN locked l
    WHERE l.n >= 0
    ORDER BY i.n
    RETURNING id, job_id, session_id
),
woken AS (
    SELECT pg_notify('hub_feed', json_build_object('sessionId', session_id, 'jobId', job_id, 'id', max(id))::text)
    FROM inserted
    WHERE %(notify)s::boolean
    GROUP BY session_id, job_id
)
SELECT coalesce((SELECT array_agg(id ORDER BY id) FROM inserted), '{}') AS ids,
       (SELECT count(*) FROM woken) AS notified
