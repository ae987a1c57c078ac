-- set_actor: who and why, for the event trigger; local to the current transaction.
SELECT set_config('agenthub.actor', %(actor)s, true), set_config('agenthub.reason', %(reason)s, true)
