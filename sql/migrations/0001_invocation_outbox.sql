-- The invocation outbox: one row per agent invocation accepted by the ingress.
-- Owned by this service (Prisma never touches it). The Job row in Prisma's "Job"
-- table is the user-facing status; this row is the queue entry and its bookkeeping.

CREATE TYPE invocation_status AS ENUM (
    'pending',    -- waiting to be claimed (new, or retrying after next_attempt_at)
    'running',    -- claimed by a dispatcher holding the lease
    'succeeded',  -- terminal: the agent ran and exited 0
    'failed',     -- terminal: agent fault, or attempts exhausted
    'cancelled'   -- terminal: the Job was cancelled before or during the run
);

CREATE TABLE invocation_outbox (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No FK to "Job": Prisma owns that table and Next.js deletes Jobs; an FK
    -- from us would make its deletes fail. A missing Job is handled at run time.
    job_id           TEXT NOT NULL,
    agent_id         TEXT NOT NULL,
    session_id       TEXT,
    user_id          TEXT NOT NULL,
    prompt           TEXT NOT NULL,
    status           invocation_status NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    last_error       TEXT,
    result           JSONB,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    CONSTRAINT invocation_outbox_job_id_key UNIQUE (job_id),
    CONSTRAINT invocation_outbox_lease_ck CHECK (
        (status = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)
    ),
    CONSTRAINT invocation_outbox_finished_ck CHECK (
        (status IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)
    )
);

-- Claim path: due pending rows in id order.
CREATE INDEX invocation_outbox_pending_idx
    ON invocation_outbox (next_attempt_at, id) WHERE status = 'pending';

-- Reclaim path: running rows whose lease has expired.
CREATE INDEX invocation_outbox_running_lease_idx
    ON invocation_outbox (lease_expires_at) WHERE status = 'running';

-- Per-session ordering check: the earliest unfinished row of a session runs first.
CREATE INDEX invocation_outbox_session_open_idx
    ON invocation_outbox (session_id, id) WHERE status IN ('pending', 'running');

-- Safety net for "one run per session at a time", whatever the claim query does.
CREATE UNIQUE INDEX invocation_outbox_one_running_per_session
    ON invocation_outbox (session_id) WHERE status = 'running' AND session_id IS NOT NULL;

-- Operator listings by status and age.
CREATE INDEX invocation_outbox_status_created_idx ON invocation_outbox (status, created_at);
