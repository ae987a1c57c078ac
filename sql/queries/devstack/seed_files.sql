-- seed_files: the demo agent's file (path into this checkout) and env var, refreshed each start.
WITH f AS (
    INSERT INTO "AgentFile" ("id", "filename", "filepath", "filesize", "mimetype", "agentId")
    VALUES (%(file_id)s, 'main.py', %(filepath)s, %(filesize)s, 'text/x-python', %(agent_id)s)
    ON CONFLICT ("id") DO UPDATE SET "filepath" = EXCLUDED."filepath", "filesize" = EXCLUDED."filesize"
), e AS (
    INSERT INTO "AgentEnvVar" ("id", "key", "value", "updatedAt", "agentId")
    VALUES (%(env_id)s, 'GREETING', 'Hello from the demo agent', now(), %(agent_id)s)
    ON CONFLICT ("agentId", "key") DO NOTHING
)
INSERT INTO "Session" ("id", "userId", "agentId")
VALUES (%(session_id)s, %(user_id)s, %(agent_id)s)
ON CONFLICT ("id") DO NOTHING
