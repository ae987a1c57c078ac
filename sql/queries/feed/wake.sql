-- feed/wake: the NOTIFY hub_feed of feed/insert.sql sent on its own, after the commit of an insert made
-- with notify => false (core/feed.py: wake_payloads builds the payloads). One statement for the batch;
-- ORDER BY keeps the given order (volatile target-list functions run after the sort).
SELECT pg_notify('hub_feed', t.p) FROM unnest(%(payloads)s::text[]) WITH ORDINALITY AS t(p, n) ORDER BY t.n
