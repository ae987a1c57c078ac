-- owners: do the schedule's agent, user and (given) session exist, and is the session theirs?
SELECT EXISTS (SELECT 1 FROM "Agent" WHERE "id" = %(agent_id)s) AS agent_exists,
       EXISTS (SELECT 1 FROM "User" WHERE "id" = %(user_id)s) AS user_exists,
       s."id" IS NOT NULL AS session_exists,
       (s."userId" = %(user_id)s AND s."agentId" = %(agent_id)s) AS session_theirs
FROM (VALUES (1)) AS one (x)
LEFT JOIN "Session" s ON s."id" = %(session_id)s
