-- set_progress: hub.set_progress, only while the Job is still being processed and the run holds its row
-- (run_fence.sql).
WITH
--@include dispatcher/run_fence
, up AS (
    UPDATE "Job"
    SET "progress" = %(percent)s, "statusMessage" = coalesce(%(message)s, "statusMessage")
    WHERE "id" = %(job_id)s AND "status" = 'PROCESSING' AND EXISTS (SELECT 1 FROM fence)
    RETURNING "id", "sessionId", "progress", "statusMessage"
)
-- `updated`: the Job moved (its `progress` feed event, appended by the caller in the same transaction).
SELECT EXISTS (SELECT 1 FROM fence) AS held, up."id" IS NOT NULL AS updated, up."sessionId" AS session_id,
       up."statusMessage" AS status_message
FROM (VALUES (1)) AS one (x) LEFT JOIN up ON true
