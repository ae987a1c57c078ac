"""The dispatcher's maintenance services: periodic work beside the claim loop, one module each.

Each module builds a ``core.lifecycle.Periodic`` service; ``dispatcher/worker.py`` starts them with the
other services. Their SQL is in the modules they call (dispatcher/claim.py, sql/queries/dispatcher/).
- ``orphan_sweeper``: fails call_agent children whose caller's dispatcher died.
"""
