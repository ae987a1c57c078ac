"""Run ``python -m fakegemini`` (the Gemini REST stand-in) as a subprocess on a free loopback port, for tests."""

from __future__ import annotations

from tests.standin_proc import StandIn


class FakeGemini(StandIn):
    module = "fakegemini"
    key_env = "FAKEGEMINI_API_KEY"
