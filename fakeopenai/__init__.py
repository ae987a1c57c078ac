"""A local stand-in for the OpenAI-compatible chat completions API, for development and tests only.

Answers are canned (text starts with ``[canned]``) and deterministic. See fakeopenai/README.md.
"""
