-- upsert_user_var: hub.set_user_var, written the way Prisma's upsert does, fenced by the run's lease
-- (run_fence.sql): a run that lost its row cannot overwrite what the current run wrote.
WITH
--@include dispatcher/run_fence
, up AS (
    INSERT INTO "UserVariable" ("id", "key", "value", "createdAt", "updatedAt", "sessionId")
    SELECT %(id)s, %(key)s, %(value)s, now(), now(), %(session_id)s
    FROM fence
    ON CONFLICT ("sessionId", "key") DO UPDATE
    SET "value" = EXCLUDED."value", "updatedAt" = EXCLUDED."updatedAt"
    RETURNING "id"
)
SELECT EXISTS (SELECT 1 FROM fence) AS held
