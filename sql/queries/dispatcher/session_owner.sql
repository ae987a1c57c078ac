-- session_owner: a session's user and agent (a dry run with --session runs as that session's user).
SELECT "userId" AS user_id, "agentId" AS agent_id FROM "Session" WHERE "id" = %(session_id)s
