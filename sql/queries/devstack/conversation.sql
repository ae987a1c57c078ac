-- conversation: the demo session's messages, oldest first.
SELECT "role", "content", "timestamp" FROM "ChatMessage"
WHERE "sessionId" = %(session_id)s
ORDER BY "timestamp", "id"
