-- send_batch: the dispatcher's queued NOTIFYs of both channels (hub_events, hub_feed), in the given order, in
-- ONE statement: one transaction and one commit for the batch, whatever the mix of channels. ORDER BY keeps
-- the order (volatile target-list functions are evaluated after the sort). Sent only after the writes they
-- announce have committed (dispatcher/events.py says why).
SELECT pg_notify(t.c, t.p)
FROM unnest(%(channels)s::text[], %(payloads)s::text[]) WITH ORDINALITY AS t (c, p, n)
ORDER BY t.n
