-- stray_objects: objects of this service found outside agent_hub (a half-done move, or a migrate of a
-- version from before the move run after it). A schema_migrations table with our columns is a candidate:
-- dispatcher/verify.py counts it only if it records one of our migrations (the name is common).
SELECT n.nspname AS schema_name, c.relname AS name, 'table' AS kind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'agent_hub'
  AND (c.relname IN ('invocation_outbox', 'invocation_outbox_event')
       OR (c.relname = 'schema_migrations'
           AND (SELECT count(*) FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attname IN ('version', 'checksum', 'applied_at')) = 3))
UNION ALL
SELECT n.nspname, t.typname, 'type'
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typname = 'invocation_status' AND n.nspname <> 'agent_hub'
UNION ALL
SELECT n.nspname, p.proname, 'function'
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = 'invocation_outbox_record_event' AND n.nspname <> 'agent_hub'
ORDER BY 1, 3, 2
