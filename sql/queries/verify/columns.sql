-- columns: which of the named tables' columns exist (Prisma's tables, in the connection's schema).
SELECT c.table_name, c.column_name
FROM information_schema.columns c
WHERE c.table_schema = current_schema()
  AND c.table_name = ANY(%(tables)s::text[])
