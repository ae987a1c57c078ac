-- send: NOTIFY hub_events once per payload (core/vocabulary.py builds them), in the given order, in ONE
-- statement: one transaction and one commit for the whole batch. ORDER BY keeps the order (volatile
-- target-list functions are evaluated after the sort). Sent only after the writes they announce have
-- committed (dispatcher/events.py says why).
SELECT pg_notify('hub_events', t.p)
FROM unnest(%(payloads)s::text[]) WITH ORDINALITY AS t (p, n)
ORDER BY t.n
