-- set_progress: hub.set_progress, only while the Job is still being processed.
UPDATE "Job"
SET "progress" = %(percent)s, "statusMessage" = coalesce(%(message)s, "statusMessage")
WHERE "id" = %(job_id)s AND "status" = 'PROCESSING'
