-- job_log: one JobLog line of a run, fenced by the run's lease (run_fence.sql).
WITH
--@include dispatcher/run_fence
, line AS (
    INSERT INTO "JobLog" ("id", "level", "message", "timestamp", "jobId")
    SELECT %(id)s, %(level)s, %(message)s, clock_timestamp(), %(job_id)s
    FROM fence
    RETURNING "id"
)
SELECT EXISTS (SELECT 1 FROM fence) AS held
