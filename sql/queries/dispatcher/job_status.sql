-- job_status: the Job's current status (NULL row: the Job was deleted).
SELECT "status"::text AS status FROM "Job" WHERE "id" = %(job_id)s
