-- fire: one run of a due schedule, written exactly as the Next.js route writes a prompt (a Session when
-- %(new_session)s, the user's ChatMessage, a QUEUED AGENT_INVOCATION Job; TEXT ids from the caller, Prisma's
-- timestamps), then the outbox row and its NOTIFY, and the schedule's next due time. One statement, inside the
-- transaction that locked the schedule.
WITH sess AS (
    INSERT INTO "Session" ("id", "userId", "agentId")
    SELECT %(session_id)s, %(user_id)s, %(agent_id)s
    WHERE %(new_session)s
    RETURNING "id"
), msg AS (
    INSERT INTO "ChatMessage" ("id", "role", "content", "timestamp", "sessionId")
    SELECT %(message_id)s, 'user', %(prompt)s, clock_timestamp(), %(session_id)s
    FROM (VALUES (1)) AS one (x) LEFT JOIN sess ON true
    RETURNING "id"
), job AS (
    INSERT INTO "Job" ("id", "type", "status", "userId", "agentId", "sessionId")
    SELECT %(job_id)s, 'AGENT_INVOCATION', 'QUEUED', %(user_id)s, %(agent_id)s, %(session_id)s
    FROM msg
    RETURNING "id"
), ins AS (
    INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, session_id, user_id, prompt, max_attempts)
    SELECT job."id", %(agent_id)s, %(session_id)s, %(user_id)s, %(prompt)s, %(max_attempts)s
    FROM job
    RETURNING id
), sched AS (
    UPDATE agent_hub.schedule
    SET next_due_at = %(next_due_at)s, last_fired_at = now(), last_job_id = %(job_id)s, runs = runs + 1,
        session_id = CASE WHEN session_mode = 'reuse' THEN %(session_id)s ELSE session_id END
    WHERE id = %(schedule_id)s
    RETURNING id
)
SELECT ins.id AS outbox_id, pg_notify('invocation_outbox', ins.id::text) AS notified
FROM ins, sched
