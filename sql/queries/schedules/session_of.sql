-- session_of: is this session still there and the schedule's user's and agent's?
SELECT EXISTS (SELECT 1 FROM "Session" WHERE "id" = %(session_id)s AND "userId" = %(user_id)s
               AND "agentId" = %(agent_id)s) AS ok
