-- relocate: move an installation from before the move (every object of ours in public) into agent_hub, in
-- place and with its data, in ONE transaction under the migrations' advisory lock. ALTER ... SET SCHEMA
-- keeps every row, index, constraint, identity sequence and trigger (they follow their table); an
-- installation that had applied only some migrations has only some of these objects, hence IF EXISTS.
-- The migration files recorded in the ledger are unchanged, so their checksums stay valid.
CREATE SCHEMA IF NOT EXISTS agent_hub;
ALTER TABLE public.schema_migrations SET SCHEMA agent_hub;
ALTER TABLE IF EXISTS public.invocation_outbox SET SCHEMA agent_hub;
ALTER TABLE IF EXISTS public.invocation_outbox_event SET SCHEMA agent_hub;
DO $$
BEGIN
    IF to_regtype('public.invocation_status') IS NOT NULL THEN
        ALTER TYPE public.invocation_status SET SCHEMA agent_hub;
    END IF;
    IF to_regprocedure('public.invocation_outbox_record_event()') IS NOT NULL THEN
        ALTER FUNCTION public.invocation_outbox_record_event() SET SCHEMA agent_hub;
    END IF;
END
$$
