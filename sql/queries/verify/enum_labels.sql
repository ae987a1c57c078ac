-- enum_labels: the labels of the named enum types (Prisma's "JobStatus", "JobType").
SELECT t.typname AS type_name, e.enumlabel AS label
FROM pg_type t
JOIN pg_enum e ON e.enumtypid = t.oid
JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = current_schema()
  AND t.typname = ANY(%(types)s::text[])
