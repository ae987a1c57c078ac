"""A local stand-in for Gemini's REST API (``generateContent``), for development and tests only.

Answers are canned (text starts with ``[canned]``) and deterministic. See fakegemini/README.md.
"""
