-- heartbeat: renew the leases of the rows this dispatcher is running and report
-- each one's Job status, so a cancelled Job or a lost lease is noticed promptly.
WITH renewed AS (
    UPDATE invocation_outbox
    SET lease_expires_at = now() + make_interval(secs => %(lease_s)s)
    WHERE id = ANY(%(ids)s) AND status = 'running' AND lease_owner = %(owner)s
    RETURNING id, job_id
)
SELECT r.id, j."status"::text AS job_status
FROM renewed r
LEFT JOIN "Job" j ON j."id" = r.job_id
