"""`make run`: the whole service on one machine, for development and demos."""
