-- legacy_applied: the ledger of an installation from before the move into agent_hub.
SELECT version, checksum FROM public.schema_migrations
