-- insert_message: one ChatMessage from the agent. The id is derived from
-- (job id, sequence) by the caller, so a re-run of the same invocation cannot
-- duplicate a message. Timestamps strictly increase within a session (TIMESTAMP(3)
-- has millisecond precision) so ordering by timestamp keeps the send order.
-- A new row is announced on the hub_events channel (docs/operations.md) by the caller, after this
-- commits (dispatcher/events.py): a NOTIFY here would serialise commits (docs/performance.md).
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
SELECT ins."id", ins."sessionId" FROM ins
