-- Everything the invoke endpoint must check, in one round trip.
-- Missing rows come back as NULL columns (LEFT JOINs on a single-row base).
SELECT
    EXISTS (SELECT 1 FROM "Agent" WHERE "id" = %(agent_id)s) AS agent_exists,
    j."id"            AS job_id,
    j."type"::text    AS job_type,
    j."status"::text  AS job_status,
    j."userId"        AS job_user_id,
    j."agentId"       AS job_agent_id,
    j."sessionId"     AS job_session_id,
    s."id"            AS session_id,
    s."userId"        AS session_user_id,
    s."agentId"       AS session_agent_id,
    o.id              AS outbox_id,
    o.status::text    AS outbox_status,
    o.agent_id        AS outbox_agent_id,
    o.session_id      AS outbox_session_id,
    o.user_id         AS outbox_user_id,
    o.prompt          AS outbox_prompt,
    o.created_at      AS outbox_created_at
FROM (VALUES (1)) AS one (x)
LEFT JOIN "Job" j ON j."id" = %(job_id)s
LEFT JOIN "Session" s ON s."id" = %(session_id)s
LEFT JOIN invocation_outbox o ON o.job_id = %(job_id)s
