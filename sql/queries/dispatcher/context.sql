-- context: everything an agent run needs from the hub's tables, in one round trip.
SELECT
    a."id"      AS agent_id,
    a."name"    AS agent_name,
    a."version" AS agent_version,
    (SELECT coalesce(json_object_agg(e."key", e."value"), '{}'::json)
       FROM "AgentEnvVar" e WHERE e."agentId" = a."id") AS env_vars,
    (SELECT coalesce(json_object_agg(u."key", u."value"), '{}'::json)
       FROM "UserVariable" u WHERE u."sessionId" = %(session_id)s) AS user_vars,
    (SELECT coalesce(json_agg(json_build_object('role', h."role", 'content', h."content",
                                                'timestamp', h."timestamp") ORDER BY h."timestamp", h."id"), '[]'::json)
       FROM (SELECT m."id", m."role", m."content", m."timestamp"
               FROM "ChatMessage" m
              WHERE m."sessionId" = %(session_id)s
              ORDER BY m."timestamp" DESC, m."id" DESC
              LIMIT %(history_limit)s) h) AS chat_history,
    (SELECT count(*) FROM "ChatMessage" m WHERE m."sessionId" = %(session_id)s) AS history_total,
    (SELECT coalesce(json_agg(json_build_object('filename', f."filename", 'filepath', f."filepath",
                                                'filesize', f."filesize") ORDER BY f."createdAt", f."id"), '[]'::json)
       FROM "AgentFile" f WHERE f."agentId" = a."id") AS files
FROM "Agent" a
WHERE a."id" = %(agent_id)s
