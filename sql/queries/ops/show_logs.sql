-- show_logs: the newest JobLog lines of a Job, oldest first.
SELECT "timestamp", "level", "message"
FROM (SELECT "timestamp", "level", "message", "id" FROM "JobLog"
      WHERE "jobId" = %(job_id)s ORDER BY "timestamp" DESC, "id" DESC LIMIT %(limit)s) l
ORDER BY "timestamp", "id"
