-- applied: the migrations recorded in our ledger.
SELECT version, checksum FROM agent_hub.schema_migrations
