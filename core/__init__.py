"""Shared plumbing for the ingress and the dispatcher: config, database, SQL, logging."""
