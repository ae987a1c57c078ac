-- layout: where our migrations ledger is. A ledger in public with our columns is the layout of versions
-- before the move into agent_hub (its versions are checked against our files before anything moves).
SELECT to_regclass('agent_hub.schema_migrations') IS NOT NULL AS ledger_in_schema,
       (SELECT count(*) = 3
          FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = 'schema_migrations'
           AND column_name IN ('version', 'checksum', 'applied_at')) AS ledger_in_public
