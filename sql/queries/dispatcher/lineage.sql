-- lineage: where an outbox row sits in a call_agent chain (depth 0 and an empty chain: top level).
SELECT depth, agent_chain, agent_id FROM agent_hub.invocation_outbox WHERE id = %(id)s
