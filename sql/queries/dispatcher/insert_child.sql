-- insert_child: hub.call_agent's child invocation. Its Job (written as Prisma writes
-- it: TEXT uuid id, enum type/status, no session) and its outbox row, inserted
-- already 'running' and leased to the dispatcher running the caller (so no other
-- dispatcher claims it), in one statement. No row comes back when the agent does not exist, or when the
-- caller's run no longer holds its row (run_fence.sql, on the caller's row: %(outbox_id)s = the parent).
WITH
--@include dispatcher/run_fence
, agent AS (
    SELECT a."id" FROM "Agent" a, fence WHERE a."id" = %(agent_id)s
),
job AS (
    INSERT INTO "Job" ("id", "type", "status", "progress", "statusMessage", "createdAt", "startedAt",
                       "userId", "agentId", "sessionId")
    SELECT %(job_id)s, 'AGENT_INVOCATION'::"JobType", 'PROCESSING'::"JobStatus", 0, %(status_message)s, now(), now(),
           %(user_id)s, agent."id", NULL
    FROM agent
    -- hub_events (docs/operations.md): the caller announces the PROCESSING status after this commits
    -- (dispatcher/events.py), as the claim's is for top-level Jobs.
    RETURNING "id"
),
child AS (
    INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, session_id, user_id, prompt, status, attempts, max_attempts,
                                   lease_owner, lease_expires_at, started_at, parent_id, depth, agent_chain)
    SELECT job."id", %(agent_id)s, NULL, %(user_id)s, %(prompt)s, 'running', 1, 1,
           %(owner)s, now() + make_interval(secs => %(lease_s)s), now(), %(parent_id)s, %(depth)s, %(chain)s
    FROM job
    RETURNING id, job_id, agent_id, session_id, user_id, prompt, attempts, max_attempts
)
SELECT * FROM child
