-- agent_exists: is there an agent with this id (a dry run's call_agent, which makes no row to find out)?
SELECT EXISTS (SELECT 1 FROM "Agent" WHERE "id" = %(agent_id)s) AS present
