-- insert_message: one ChatMessage from the agent. The id is derived from
-- (job id, sequence) by the caller, so a re-run of the same invocation cannot
-- duplicate a message. Timestamps strictly increase within a session (TIMESTAMP(3)
-- has millisecond precision) so ordering by timestamp keeps the send order.
-- A new row is announced on the hub_events channel (docs/operations.md), in this transaction.
WITH ins AS (
INSERT INTO "ChatMessage" ("id", "role", "content", "timestamp", "sessionId")
SELECT %(id)s, 'agent', %(content)s,
       greatest(clock_timestamp()::timestamp(3),
                (SELECT max(m."timestamp") FROM "ChatMessage" m WHERE m."sessionId" = %(session_id)s)
                    + interval '1 millisecond'),
       %(session_id)s
ON CONFLICT ("id") DO NOTHING
RETURNING "id", "sessionId"
)
SELECT ins."id",
       pg_notify('hub_events', json_build_object('kind', 'message', 'job_id', %(job_id)s::text,
                                                 'session_id', ins."sessionId", 'message_id', ins."id")::text) AS notified
FROM ins
