"""Which provider a ``call_llm`` model name goes to: ``openai:<name>`` to an OpenAI-compatible endpoint
(dispatcher/llm_openai.py), ``gemini:<name>`` or an unprefixed name to Gemini (dispatcher/llm.py).

``HUB_LLM_MODEL`` (the default model) may carry either prefix too.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Provider(StrEnum):
    GEMINI = "gemini"
    OPENAI = "openai"


# OpenAI-compatible names are freer than Gemini's: OpenRouter's "meta-llama/llama-3.1-70b-instruct",
# Ollama's "llama3.2:3b", Together's "Qwen/Qwen2.5-72B-Instruct-Turbo".
_OPENAI_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
_GEMINI_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class BadModelName(ValueError):
    pass


def split_model(model: str) -> tuple[Provider, str]:
    """(provider, the name that provider knows the model by); BadModelName saying what a name may be."""
    text = model.strip()
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() == Provider.OPENAI.value:
        if not _OPENAI_NAME_RE.match(rest):
            raise BadModelName("an openai: model needs a name after the prefix, e.g. openai:gpt-4o-mini")
        return Provider.OPENAI, rest
    if sep and prefix.lower() == Provider.GEMINI.value:
        text = rest
    name = text.removeprefix("models/")
    if not _GEMINI_NAME_RE.match(name):
        raise BadModelName("model must be a model name such as gemini-2.5-flash or openai:gpt-4o-mini")
    return Provider.GEMINI, name
