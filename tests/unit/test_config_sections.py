"""Configuration in sections: each section parses its own variables, the process configs are exactly their
sections' settings, the dispatcher's defaults are the README's, and a section can be taken out of a config."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from core.config import (
    AdmissionSettings,
    AuthSettings,
    ConfigError,
    IngressConfig,
    RequestLimits,
    Section,
    WebDatabaseSettings,
    parse_choice,
    parse_float,
    parse_int,
    parse_text,
)
from dispatcher.config import (
    SECTIONS,
    DispatcherConfig,
    HttpSettings,
    LLMSettings,
    LoopSettings,
    OpenAISettings,
    PistonServer,
    PistonSettings,
)

BASE = {"DATABASE_URL": "postgresql://u@h/d", "PISTON_URL": "http://p:1"}


def names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize(("config", "sections"), [
    (DispatcherConfig, SECTIONS),
    (IngressConfig, (WebDatabaseSettings, RequestLimits, AuthSettings, AdmissionSettings)),
])
def test_a_config_is_exactly_its_sections_each_setting_in_one_section(
    config: type, sections: tuple[type[Section], ...]
) -> None:
    assert names(config) == set().union(*(names(s) for s in sections))
    assert sum(len(names(s)) for s in sections) == len(names(config))  # no setting in two sections
    assert all(issubclass(config, s) for s in sections)


def test_the_dispatchers_defaults_are_the_readmes() -> None:
    cfg = DispatcherConfig.from_env(BASE)
    assert {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "owner"} == {
        "database_url": "postgresql://u@h/d", "piston_url": "http://p:1", "piston_transport": "auto",
        "piston_retry_attempts": 4, "piston_retry_base_s": 0.5, "piston_retry_max_s": 8.0,
        "piston_max_body_bytes": 100_000, "piston_servers": (PistonServer("http://p:1", 64),),
        "piston_cooldown_base_s": 2.0, "piston_cooldown_max_s": 60.0, "concurrency": 4, "batch_size": 4,
        "poll_interval_s": 2.0, "lease_s": 30.0,
        "heartbeat_s": 2.0, "retry_delay_s": 5.0, "retry_max_delay_s": 300.0, "shutdown_grace_s": 25.0,
        "metrics_port": 0, "outbox_max_attempts": 5, "max_running_per_user": 0, "max_running_per_agent": 0,
        "claim_linger_s": 0.005, "writers": 1,
        "run_timeout_ms": 3000, "run_memory_limit": None, "run_timeout_max_ms": 300_000, "run_memory_limit_max": None,
        "history_max_messages": 500,
        "max_messages": 200, "max_message_chars": 100_000, "max_output_chars": 2_000_000, "agent_files_root": None,
        "agent_files_max_count": 50, "agent_files_max_bytes": 80_000, "agent_files_http_timeout_s": 10.0,
        "gemini_api_key": None, "gemini_base_url": None, "llm_model": "gemini-2.5-flash", "llm_timeout_s": 60.0,
        "llm_retry_attempts": 4, "llm_retry_base_s": 1.0, "llm_retry_max_s": 10.0, "max_llm_calls": 20,
        "max_llm_calls_max": 100, "max_agent_depth": 3, "child_time_margin_ms": 1000,
        "openai_api_key": None, "openai_base_url": None, "openai_max_tokens_field": "max_completion_tokens",
        "http_allow_hosts": None, "http_allow_private": False, "http_max_calls": 50, "http_max_response_bytes": 1 << 20,
        "http_max_request_bytes": 1 << 20, "http_timeout_s": 30.0, "http_max_redirects": 5,
    }


@pytest.mark.parametrize(("env", "message"), [
    ({"PISTON_URL": ""}, r"^PISTON_URL is not set"),
    ({"PISTON_URL": "ftp://p"}, r"^PISTON_URL must start with http:// or https://, got 'ftp://p'$"),
    ({"PISTON_TRANSPORT": "pigeon"}, r"^PISTON_TRANSPORT must be one of ws, execute, auto, got 'pigeon'$"),
    ({"DISPATCHER_CONCURRENCY": "0"}, r"^DISPATCHER_CONCURRENCY must be >= 1, got 0$"),
    ({"DISPATCHER_LEASE_S": "4", "DISPATCHER_HEARTBEAT_S": "3"},
     r"^DISPATCHER_HEARTBEAT_S must be at most half of DISPATCHER_LEASE_S$"),
    ({"AGENT_FILES_ROOT": "/no/such/folder"}, r"^AGENT_FILES_ROOT is not a directory: /no/such/folder$"),
    ({"HUB_LLM_TIMEOUT_S": "soon"}, r"^HUB_LLM_TIMEOUT_S must be a number, got 'soon'$"),
    ({"OPENAI_BASE_URL": "api.groq.com"}, r"^OPENAI_BASE_URL must start with http:// or https://, got 'api.groq.com'$"),
    ({"OPENAI_MAX_TOKENS_FIELD": "tokens"}, r"^OPENAI_MAX_TOKENS_FIELD must be one of max_completion_tokens, max_tokens"),
    ({"HUB_HTTP_ALLOW_HOSTS": "https://api.example.com"}, r"^HUB_HTTP_ALLOW_HOSTS: 'https://api.example.com' is not a host"),
    ({"HUB_HTTP_ALLOW_PRIVATE": "maybe"}, r"^HUB_HTTP_ALLOW_PRIVATE must be 1 or 0, got 'maybe'$"),
    ({"HUB_HTTP_MAX_CALLS": "-1"}, r"^HUB_HTTP_MAX_CALLS must be >= 0, got -1$"),
    ({"HUB_HTTP_MAX_RESPONSE_BYTES": "0"}, r"^HUB_HTTP_MAX_RESPONSE_BYTES must be >= 1, got 0$"),
    ({"HUB_HTTP_MAX_REQUEST_BYTES": "lots"}, r"^HUB_HTTP_MAX_REQUEST_BYTES must be an integer, got 'lots'$"),
    ({"HUB_HTTP_TIMEOUT_S": "0"}, r"^HUB_HTTP_TIMEOUT_S must be >= 0.1, got 0.0$"),
    ({"HUB_HTTP_MAX_REDIRECTS": "x"}, r"^HUB_HTTP_MAX_REDIRECTS must be an integer, got 'x'$"),
    ({"DATABASE_URL": ""}, r"^DATABASE_URL is not set"),
    ({"PISTON_URL": "http://a:1=16,ftp://b"}, r"^PISTON_URL must start with http:// or https://, got 'ftp://b'$"),
    ({"PISTON_URL": "http://a:1=lots"}, r"^PISTON_URL: the slot count after 'http://a:1' must be a whole number from 1, "
                                        r"got 'lots'$"),
    ({"PISTON_URL": "http://a:1=0"}, r"^PISTON_URL: the slot count after 'http://a:1' must be a whole number"),
    ({"PISTON_URL": "http://a:1,,http://b:1"}, r"^PISTON_URL has an empty server in"),
    ({"PISTON_URL": "http://a:1/,http://a:1=8"}, r"^PISTON_URL names http://a:1 twice$"),
    ({"PISTON_COOLDOWN_MAX_S": "-1"}, r"^PISTON_COOLDOWN_MAX_S must be >= 0.0, got -1.0$"),
    ({"AGENT_RUN_TIMEOUT_MAX_MS": "2000"}, r"^AGENT_RUN_TIMEOUT_MAX_MS \(2000\) must be at least AGENT_RUN_TIMEOUT_MS \(3000\)$"),
    ({"AGENT_RUN_MEMORY_LIMIT_MAX": "0"}, r"^AGENT_RUN_MEMORY_LIMIT_MAX must be a number of bytes, or -1"),
    ({"AGENT_RUN_MEMORY_LIMIT": "2000", "AGENT_RUN_MEMORY_LIMIT_MAX": "1000"},
     r"^AGENT_RUN_MEMORY_LIMIT_MAX \(1000\) must be at least AGENT_RUN_MEMORY_LIMIT \(2000\)$"),
    ({"HUB_MAX_LLM_CALLS_MAX": "5"}, r"^HUB_MAX_LLM_CALLS_MAX \(5\) must be at least HUB_MAX_LLM_CALLS \(20\)$"),
])
def test_a_bad_dispatcher_variable_is_named_in_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DispatcherConfig.from_env({**BASE, **env})


def test_each_section_parses_its_own_variables() -> None:
    env = {**BASE, "PISTON_URL": "https://p:2/", "PISTON_TRANSPORT": "WS", "DISPATCHER_CONCURRENCY": "8",
           "HUB_LLM_MODEL": " gemini-x ", "GEMINI_BASE_URL": " http://g:1/ "}
    assert PistonSettings.from_env(env).piston_url == "https://p:2"
    assert PistonSettings.from_env(env).piston_transport == "ws"
    loop = LoopSettings.from_env(env)
    assert (loop.concurrency, loop.batch_size) == (8, 8)
    assert LLMSettings.from_env(env) == LLMSettings(llm_model="gemini-x", gemini_base_url="http://g:1")


def test_a_section_taken_out_of_a_config_has_the_configs_values() -> None:
    env = {**BASE, "GEMINI_API_KEY": "k", "HUB_LLM_RETRY_ATTEMPTS": "2", "AGENT_RUN_TIMEOUT_MS": "9000",
           "OPENAI_API_KEY": "sk-k", "OPENAI_BASE_URL": "http://o:1/v1/", "HUB_HTTP_ALLOW_HOSTS": "*.example.com",
           "HUB_HTTP_MAX_CALLS": "3"}
    cfg = DispatcherConfig.from_env(env)
    for section in (LLMSettings, OpenAISettings, HttpSettings):
        assert section.of(cfg) == section.from_env(env)
        assert type(section.of(cfg)) is section
    assert OpenAISettings.of(cfg).openai_base_url == "http://o:1/v1"
    http = HttpSettings.of(cfg)
    assert http.http_enabled and http.http_max_calls == 3 and http.http_allow_hosts is not None
    assert http.http_allow_hosts.allows("api.example.com") and not http.http_allow_hosts.allows("example.com")
    assert "sk-k" not in repr(cfg) and "sk-k" not in repr(OpenAISettings.of(cfg))


def test_the_parsers_are_public_and_treat_empty_as_the_default() -> None:
    env = {"A": " 7 ", "B": "", "C": " 0.5", "D": " Execute ", "E": "  "}
    assert (parse_int(env, "A", 1), parse_int(env, "B", 1), parse_float(env, "C", 1.0)) == (7, 1, 0.5)
    assert parse_choice(env, "D", "auto", ("ws", "execute", "auto")) == "execute"
    assert (parse_text(env, "E"), parse_text(env, "E", "x"), parse_text(env, "D")) == (None, "x", "Execute")


class Recording(dict[str, str]):
    """An environment that remembers every variable asked of it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def test_every_variable_the_dispatcher_reads_has_a_row_in_the_readmes_configuration_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {name for line in table.splitlines() if line.startswith("| `")
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])}
    env = Recording(BASE)
    DispatcherConfig.from_env(env)
    assert {"HUB_HTTP_ALLOW_HOSTS", "OPENAI_API_KEY", "HUB_HTTP_MAX_REDIRECTS"} <= env.asked
    assert env.asked - rows == set()


def test_piston_url_takes_a_pool_of_servers_each_with_its_slots() -> None:
    settings = PistonSettings.from_env({"PISTON_URL": " http://a:2000=16, https://b:2000/ , http://c:2000=32 "})
    assert settings.piston_servers == (PistonServer("http://a:2000", 16), PistonServer("https://b:2000", 64),
                                       PistonServer("http://c:2000", 32))
    assert settings.piston_url == "http://a:2000"


def test_the_maxima_of_an_agents_own_limits_follow_a_larger_service_default() -> None:
    cfg = DispatcherConfig.from_env({**BASE, "AGENT_RUN_TIMEOUT_MS": "600000", "HUB_MAX_LLM_CALLS": "500"})
    assert (cfg.run_timeout_max_ms, cfg.max_llm_calls_max) == (600_000, 500)
