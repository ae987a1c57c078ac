-- show_job: the hub's Job row for an outbox row.
SELECT "id", "status"::text AS status, "progress", "statusMessage", "errorMessage",
       "createdAt", "startedAt", "completedAt"
FROM "Job" WHERE "id" = %(job_id)s
