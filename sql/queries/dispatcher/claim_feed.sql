-- claim_feed: the claim's PROCESSING `status` feed events (core/feed.py: status), appended in the claim's own
-- statement, so the claim stays one autocommit statement (one round trip, no BEGIN and COMMIT of its own).
-- Included by claim_take.sql after its `taken` CTE (and a comma), before its final SELECT. The same locking as feed/insert.sql, which says why:
-- one advisory lock per stream key (the session, or the job without one), class 17989, in key order, every
-- one taken before the first id is drawn. The sort of the keys reads all of `taken` first, so every outbox
-- and Job row lock of the claim is held before the first feed lock: the feed's locks are the statement's last.
-- %(notify)s: NOTIFY hub_feed with the commit (else the dispatcher sends the wake-ups after it, from
-- `feed_id`: core/feed.py wake_payloads).
feed_input AS (
    SELECT t.job_id, t.job_session_id AS session_id, t.id AS n
    FROM taken t
    WHERE t.job_started AND t.job_status_before = 'QUEUED'
),
feed_locked AS MATERIALIZED (
    SELECT count(pg_advisory_xact_lock(17989, hashtext(k.key))) AS n
    FROM (SELECT DISTINCT coalesce(session_id, job_id) AS key FROM feed_input ORDER BY 1) k
),
fed AS (
    INSERT INTO agent_hub.feed_event (job_id, session_id, kind, payload)
    SELECT i.job_id, i.session_id, 'status',
           jsonb_build_object('jobId', i.job_id, 'status', 'PROCESSING', 'errorMessage', NULL)
    FROM feed_input i CROSS JOIN feed_locked l
    WHERE l.n >= 0
    ORDER BY i.n
    RETURNING id, job_id, session_id
),
fed_woken AS (
    SELECT pg_notify('hub_feed', json_build_object('sessionId', session_id, 'jobId', job_id, 'id', id)::text)
    FROM fed
    WHERE %(notify)s::boolean
)
