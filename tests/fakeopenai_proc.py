"""Run ``python -m fakeopenai`` (the OpenAI-compatible stand-in) as a subprocess on a free loopback port, for tests."""

from __future__ import annotations

from tests.standin_proc import StandIn


class FakeOpenAI(StandIn):
    module = "fakeopenai"
    key_env = "FAKEOPENAI_API_KEY"

    def __init__(self, api_key: str) -> None:
        super().__init__(api_key)
        self.base_url = self.url + "/v1"  # what OPENAI_BASE_URL is set to
