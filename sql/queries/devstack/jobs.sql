-- jobs: the demo session's latest Jobs.
SELECT "id", "status"::text AS status, "progress", "errorMessage" AS error
FROM "Job" WHERE "sessionId" = %(session_id)s
ORDER BY "createdAt" DESC LIMIT 5
