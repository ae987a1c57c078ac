-- enqueue: everything the invoke endpoint must check, and, only when all of it holds, the outbox
-- row and its NOTIFY, in ONE statement: one round trip, atomic on its own (run in autocommit, so no
-- BEGIN/COMMIT round trips either), and the notification is delivered only if it commits.
--
-- `look` returns every column ingress/admission.py's check() reads (missing rows come back as NULL
-- columns: LEFT JOINs on a single-row base). The INSERT happens only when `look` holds every value of
-- %(expected)s: the admission rule itself lives in ingress/admission.py (its expected(): no outbox row
-- yet, and every requirement met), so check() and this statement cannot disagree. The tests pin that
-- every refused request leaves no row (tests/integration/test_invoke_endpoint.py).
-- A concurrent identical POST that commits first makes ON CONFLICT skip the insert: `id` is NULL and
-- the caller runs this again, which then finds that row (a repeat).
WITH look AS (
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
        o.created_at      AS outbox_created_at,
        -- HUB_SESSION_POLICY=reject only (%(check_busy)s): another job of the session queued or running.
        CASE WHEN %(check_busy)s THEN EXISTS (
            SELECT 1 FROM agent_hub.invocation_outbox b
            WHERE b.session_id = %(session_id)s AND b.status IN ('pending', 'running') AND b.job_id <> %(job_id)s
        ) ELSE false END  AS session_busy,
        -- INGRESS_RATE_PER_USER only (%(rate_limit)s > 0): whether the user already has rate_limit prompts
        -- queued in the window, and if so when the oldest of the newest rate_limit leaves it (Retry-After).
        -- Index invocation_outbox_user_created_idx (migration 0009).
        rate.full_until IS NOT NULL AS rate_exceeded,
        greatest(1, ceil(extract(epoch FROM rate.full_until - now())))::int AS rate_retry_after_s
    FROM (VALUES (1)) AS one (x)
    LEFT JOIN LATERAL (
        SELECT r.created_at + make_interval(secs => %(rate_window_s)s) AS full_until
        FROM agent_hub.invocation_outbox r
        WHERE %(rate_limit)s::int > 0
          AND r.user_id = %(user_id)s AND r.parent_id IS NULL
          AND r.created_at > now() - make_interval(secs => %(rate_window_s)s)
        ORDER BY r.created_at DESC
        OFFSET greatest(%(rate_limit)s::int - 1, 0) LIMIT 1
    ) rate ON true
    LEFT JOIN "Job" j ON j."id" = %(job_id)s
    LEFT JOIN "Session" s ON s."id" = %(session_id)s
    LEFT JOIN agent_hub.invocation_outbox o ON o.job_id = %(job_id)s
),
ins AS (
    INSERT INTO agent_hub.invocation_outbox (job_id, agent_id, session_id, user_id, prompt, max_attempts)
    SELECT %(job_id)s, %(agent_id)s, %(session_id)s, %(user_id)s, %(prompt)s, %(max_attempts)s
    FROM look
    WHERE to_jsonb(look) @> %(expected)s::jsonb
    ON CONFLICT (job_id) DO NOTHING
    RETURNING id, status::text AS status, created_at
)
SELECT look.*, ins.id, ins.status, ins.created_at,
       CASE WHEN ins.id IS NOT NULL THEN pg_notify('invocation_outbox', ins.id::text) END AS notified
FROM look LEFT JOIN ins ON true
