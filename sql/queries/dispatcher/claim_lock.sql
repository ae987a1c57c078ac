-- claim_lock: serialise capped claims (claim_fair.sql) across dispatchers for the rest of the transaction.
SELECT pg_advisory_xact_lock(4702152390815027201)
