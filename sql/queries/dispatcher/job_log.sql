-- job_log: one JobLog line.
INSERT INTO "JobLog" ("id", "level", "message", "timestamp", "jobId")
VALUES (%(id)s, %(level)s, %(message)s, clock_timestamp(), %(job_id)s)
