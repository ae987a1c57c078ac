-- ledger: our schema and its migrations ledger. Everything this service owns lives in agent_hub, out of
-- the sight of Prisma (which manages only the schemas named in its datasource: public by default).
CREATE SCHEMA IF NOT EXISTS agent_hub;
CREATE TABLE IF NOT EXISTS agent_hub.schema_migrations (
    version    TEXT PRIMARY KEY,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
