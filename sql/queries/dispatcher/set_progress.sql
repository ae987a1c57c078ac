-- set_progress: hub.set_progress, only while the Job is still being processed and the run holds its row
-- (run_fence.sql).
WITH
--@include dispatcher/run_fence
, up AS (
    UPDATE "Job"
    SET "progress" = %(percent)s, "statusMessage" = coalesce(%(message)s, "statusMessage")
    WHERE "id" = %(job_id)s AND "status" = 'PROCESSING' AND EXISTS (SELECT 1 FROM fence)
    RETURNING "id"
)
SELECT EXISTS (SELECT 1 FROM fence) AS held
