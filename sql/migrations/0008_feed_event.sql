-- The durable event feed of runs (issue 20): one row per event a client can see on the SSE streams
-- (GET /api/jobs/<jobId>/events, GET /api/sessions/<sessionId>/events). `id` is the SSE `id:` a client
-- resumes from (Last-Event-ID), `kind` its `event:` and `payload` its `data:`, stored as sent.
-- Written by the dispatcher in the same commit as the change each event announces, through
-- sql/queries/feed/insert.sql (core/feed.py), which also makes ids increase in commit order within a
-- session (or a job without one): see that file. Pruned with the outbox (sql/queries/ops/prune.sql).
-- No FK to the outbox or to Prisma's "Job": both are deleted by others; the feed is keyed by job id.
-- Named without a schema: core/migrate.py applies this file in agent_hub.

CREATE TABLE feed_event (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     TEXT NOT NULL,
    session_id TEXT,                      -- NULL for a job without a session (a call_agent child)
    kind       TEXT NOT NULL CHECK (kind IN ('message', 'delta', 'progress', 'status', 'log')),
    payload    JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- The SSE data always names its job: a client reading a session stream needs it.
    CONSTRAINT feed_event_payload_ck CHECK (jsonb_typeof(payload) = 'object' AND payload ->> 'jobId' = job_id)
);

-- "A job's events after id N" (the job stream, its replay, and prune by job).
CREATE INDEX feed_event_job_idx ON feed_event (job_id, id);

-- "A session's events after id N" (the session stream).
CREATE INDEX feed_event_session_idx ON feed_event (session_id, id) WHERE session_id IS NOT NULL;
