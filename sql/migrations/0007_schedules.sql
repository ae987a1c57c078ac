-- Scheduled runs (python -m dispatcher schedule ...). A due schedule is fired by whichever dispatcher locks it
-- first (FOR UPDATE SKIP LOCKED): in one transaction it writes the hub's rows as Next.js would (Session when
-- needed, the user's ChatMessage, the QUEUED Job), the outbox row, and moves next_due_at past now, so a due time
-- fires exactly once however many dispatchers run, and a long downtime gives one catch-up run, not one per tick.
-- Named without a schema: core/migrate.py applies this file in agent_hub.

CREATE TABLE schedule (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id      TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    prompt        TEXT NOT NULL CHECK (prompt <> ''),
    -- Exactly one of: a cron expression (5 fields, evaluated in tz) or a fixed interval.
    cron          TEXT,
    tz            TEXT NOT NULL DEFAULT 'UTC',
    every_s       INTEGER CHECK (every_s >= 1),
    -- new: a new Session per run; reuse: the schedule's own Session (created on the first run, kept in
    -- session_id); fixed: the Session given at add time (session_id).
    session_mode  TEXT NOT NULL CHECK (session_mode IN ('new', 'reuse', 'fixed')),
    session_id    TEXT,
    paused        BOOLEAN NOT NULL DEFAULT false,
    paused_reason TEXT,
    next_due_at   TIMESTAMPTZ NOT NULL,
    last_fired_at TIMESTAMPTZ,
    last_job_id   TEXT,
    runs          INTEGER NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT schedule_kind_ck CHECK ((cron IS NULL) <> (every_s IS NULL)),
    CONSTRAINT schedule_fixed_session_ck CHECK (session_mode <> 'fixed' OR session_id IS NOT NULL)
);

-- The dispatchers' "what is due" look, every poll: only active schedules, by due time.
CREATE INDEX schedule_due_idx ON schedule (next_due_at) WHERE NOT paused;

-- Statistics over a time window (python -m dispatcher stats): the window's rows only, whatever the history;
-- agent_id rides along so a per-agent look filters inside the index.
CREATE INDEX invocation_outbox_created_agent_idx ON invocation_outbox (created_at, agent_id);
