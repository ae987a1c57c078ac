-- Readiness: the database answers and our tables exist.
SELECT to_regclass('agent_hub.invocation_outbox') IS NOT NULL AS outbox_ready,
       to_regclass('"Job"') IS NOT NULL AS prisma_ready
