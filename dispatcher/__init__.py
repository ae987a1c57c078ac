"""The dispatcher: claims outbox rows, runs agents in Piston, writes results back."""
