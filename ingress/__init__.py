"""The ingress: a Flask app that accepts invocations from Next.js into the outbox."""
