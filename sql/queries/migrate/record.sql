-- record: one applied migration, in the transaction that applied it.
INSERT INTO agent_hub.schema_migrations (version, checksum) VALUES (%(version)s, %(checksum)s)
