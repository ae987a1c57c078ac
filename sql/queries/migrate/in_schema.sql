-- in_schema: the rest of this transaction creates unqualified objects in agent_hub (migration files name
-- their objects without a schema); the hub's own tables still resolve through the connection's search_path.
SELECT set_config('search_path', 'agent_hub, ' || current_setting('search_path'), true)
