-- insert_message: one ChatMessage from the agent, fenced by the run's lease (run_fence.sql). The id is derived
-- from (job id, sequence) by the caller, so a re-run of the same invocation cannot duplicate a message.
-- Timestamps strictly increase within a session (TIMESTAMP(3) has millisecond precision) so ordering by
-- timestamp keeps the send order. `held` is false when the run no longer holds its row (nothing written);
-- `id` is NULL as well when the message was already written by an earlier attempt.
-- A new row is announced on the hub_events channel (docs/operations.md) by the caller, after this
-- commits (dispatcher/events.py): a NOTIFY here would serialise commits (docs/performance.md). Its `message`
-- feed event (core/feed.py) is appended in the same transaction by the caller, from this row (timestamp).
WITH
--@include dispatcher/run_fence
, ins AS (
    INSERT INTO "ChatMessage" ("id", "role", "content", "timestamp", "sessionId")
    SELECT %(id)s, 'agent', %(content)s,
           greatest(clock_timestamp()::timestamp(3),
                    (SELECT max(m."timestamp") FROM "ChatMessage" m WHERE m."sessionId" = %(session_id)s)
                        + interval '1 millisecond'),
           %(session_id)s
    FROM fence
    ON CONFLICT ("id") DO NOTHING
    RETURNING "id", "sessionId", "timestamp"
)
SELECT EXISTS (SELECT 1 FROM fence) AS held, ins."id", ins."sessionId", ins."timestamp"
FROM (VALUES (1)) AS one (x) LEFT JOIN ins ON true
