-- job_log: one JobLog line of a run, fenced by the run's lease (run_fence.sql). %(at)s is the line's time from
-- the run's LineClock (dispatcher/line_clock.py): the run's lines keep their order in a millisecond column.
WITH
--@include dispatcher/run_fence
, line AS (
    INSERT INTO "JobLog" ("id", "level", "message", "timestamp", "jobId")
    SELECT %(id)s, %(level)s, %(message)s, %(at)s::timestamptz, %(job_id)s
    FROM fence
    RETURNING "id"
)
SELECT EXISTS (SELECT 1 FROM fence) AS held
