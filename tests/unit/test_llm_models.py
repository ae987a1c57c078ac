"""Which provider a call_llm model name goes to, and the OpenAI provider's settings."""

from __future__ import annotations

import pytest

from core.config import ConfigError
from dispatcher.config import LLMSettings, OpenAISettings
from dispatcher.llm_models import BadModelName, Provider, split_model
from dispatcher.llm_openai import OpenAIClient


@pytest.mark.parametrize(("model", "provider", "name"), [
    ("gemini-2.5-flash", Provider.GEMINI, "gemini-2.5-flash"),
    ("models/gemini-2.5-pro", Provider.GEMINI, "gemini-2.5-pro"),
    ("gemini:gemini-2.5-flash", Provider.GEMINI, "gemini-2.5-flash"),
    (" openai:gpt-4o-mini ", Provider.OPENAI, "gpt-4o-mini"),
    ("OpenAI:gpt-4o", Provider.OPENAI, "gpt-4o"),
    ("openai:meta-llama/llama-3.1-70b-instruct", Provider.OPENAI, "meta-llama/llama-3.1-70b-instruct"),
    ("openai:llama3.2:3b", Provider.OPENAI, "llama3.2:3b"),
])
def test_a_prefix_names_the_provider_and_no_prefix_is_gemini(model: str, provider: Provider, name: str) -> None:
    assert split_model(model) == (provider, name)


@pytest.mark.parametrize("model", ["openai:", "openai: gpt", "gemini:", "a/b", "", "anthropic:claude", "gpt 4"])
def test_a_malformed_model_name_is_refused(model: str) -> None:
    with pytest.raises(BadModelName):
        split_model(model)


def test_openai_settings_default_to_openai_and_the_client_shares_the_llm_timeouts() -> None:
    env = {"OPENAI_API_KEY": " sk-x ", "HUB_LLM_TIMEOUT_S": "7", "HUB_LLM_RETRY_ATTEMPTS": "2"}
    s = OpenAISettings.from_env(env)
    assert (s.openai_api_key, s.openai_base_url, s.openai_max_tokens_field) == ("sk-x", None, "max_completion_tokens")
    assert "sk-x" not in repr(s)
    assert OpenAISettings.from_env({}).openai_api_key is None
    client = OpenAIClient(s, LLMSettings.from_env(env))
    assert (client.llm.llm_timeout_s, client.llm.llm_retry_attempts) == (7.0, 2)


@pytest.mark.parametrize(("env", "named"), [
    ({"OPENAI_BASE_URL": "api.groq.com/openai/v1"}, "OPENAI_BASE_URL"),
    ({"OPENAI_MAX_TOKENS_FIELD": "tokens"}, "OPENAI_MAX_TOKENS_FIELD"),
])
def test_a_bad_openai_setting_names_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        OpenAISettings.from_env(env)
