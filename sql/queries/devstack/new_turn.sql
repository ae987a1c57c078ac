-- new_turn: what the Next.js route writes before it POSTs: the user's message and a QUEUED Job.
WITH m AS (
    INSERT INTO "ChatMessage" ("id", "role", "content", "timestamp", "sessionId")
    VALUES (%(message_id)s, 'user', %(prompt)s, clock_timestamp(), %(session_id)s)
)
INSERT INTO "Job" ("id", "type", "status", "userId", "agentId", "sessionId")
VALUES (%(job_id)s, 'AGENT_INVOCATION', 'QUEUED', %(user_id)s, %(agent_id)s, %(session_id)s)
