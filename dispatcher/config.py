"""Dispatcher configuration, from the environment only (see the README's table), in sections.

Each section parses its own variables (core.config's ``parse_*``); ``DispatcherConfig`` is all of them,
so every setting keeps its one flat name (``cfg.piston_url``), and code that needs only one section can
take just that type, e.g. ``LLMSettings.of(cfg)`` (core/config.py, ``Section``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from core.config import (
    ConfigError,
    Section,
    database_url,
    parse_choice,
    parse_flag,
    parse_float,
    parse_int,
    parse_text,
)
from dispatcher.llm_models import BadModelName, split_model
from hubpy.hub._hosts import HostPatternError, HostPatterns


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings(Section):
    database_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        return cls(database_url=database_url(env))


PISTON_DEFAULT_SLOTS = 64  # Piston's max_concurrent_jobs


@dataclass(frozen=True)
class PistonServer:
    url: str
    slots: int  # its concurrent jobs (PISTON_MAX_CONCURRENT_JOBS): how the pool weighs its load


def parse_piston_servers(env: Mapping[str, str], name: str = "PISTON_URL") -> tuple[PistonServer, ...]:
    """One Piston server or a comma-separated pool, each with an optional ``=slots``:
    ``http://a:2000=16,http://b:2000=32`` (slots default to Piston's 64)."""
    raw = (env.get(name) or "").strip()
    if not raw:
        raise ConfigError(f"{name} is not set (e.g. http://127.0.0.1:2000)")
    servers: list[PistonServer] = []
    for item in (part.strip() for part in raw.split(",")):
        url, slots = item, PISTON_DEFAULT_SLOTS
        if "=" in item:
            url, _, count = item.rpartition("=")
            if not count.strip().isdigit() or int(count) < 1:
                raise ConfigError(f"{name}: the slot count after {url!r} must be a whole number from 1, got {count!r}")
            slots = int(count)
        url = url.strip().rstrip("/")
        if not url:
            raise ConfigError(f"{name} has an empty server in {raw!r}")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must start with http:// or https://, got {url!r}")
        if any(s.url == url for s in servers):
            raise ConfigError(f"{name} names {url} twice")
        servers.append(PistonServer(url, slots))
    return tuple(servers)


@dataclass(frozen=True, kw_only=True)
class PistonSettings(Section):
    """Where the sandbox is (one Piston server or a pool), how to reach it, and how to retry it in process."""

    piston_url: str  # the first (or only) server
    piston_transport: str  # ws | execute | auto
    piston_retry_attempts: int
    piston_retry_base_s: float
    piston_retry_max_s: float
    piston_max_body_bytes: int
    piston_servers: tuple[PistonServer, ...] = ()  # every server of PISTON_URL, with its slots
    piston_cooldown_base_s: float = 2.0  # a pool's server that failed transiently: out this long, doubling…
    piston_cooldown_max_s: float = 60.0  # …up to this (jittered)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        servers = parse_piston_servers(env)
        return cls(
            piston_url=servers[0].url,
            piston_servers=servers,
            piston_cooldown_base_s=parse_float(env, "PISTON_COOLDOWN_BASE_S", 2.0, minimum=0.0),
            piston_cooldown_max_s=parse_float(env, "PISTON_COOLDOWN_MAX_S", 60.0, minimum=0.0),
            piston_transport=parse_choice(env, "PISTON_TRANSPORT", "auto", ("ws", "execute", "auto")),
            piston_retry_attempts=parse_int(env, "PISTON_RETRY_ATTEMPTS", 4, minimum=1),
            piston_retry_base_s=parse_float(env, "PISTON_RETRY_BASE_S", 0.5, minimum=0.0),
            piston_retry_max_s=parse_float(env, "PISTON_RETRY_MAX_S", 8.0, minimum=0.0),
            piston_max_body_bytes=parse_int(env, "PISTON_MAX_BODY_BYTES", 100_000, minimum=10_000),
        )


@dataclass(frozen=True, kw_only=True)
class LoopSettings(Section):
    """The dispatcher loop: slots, claiming, leases, backoff of a row, shutdown, and who it is."""

    concurrency: int
    batch_size: int
    poll_interval_s: float
    lease_s: float
    heartbeat_s: float
    retry_delay_s: float
    retry_max_delay_s: float
    shutdown_grace_s: float
    owner: str
    metrics_port: int = 0  # DISPATCHER_METRICS_PORT: /metrics HTTP server; 0 = off (docs/operations.md)
    outbox_max_attempts: int = 5  # OUTBOX_MAX_ATTEMPTS, as the web's: for the rows scheduled runs queue
    max_running_per_user: int = 0  # DISPATCHER_MAX_RUNNING_PER_USER: live runs of one user, all dispatchers; 0 = no cap
    max_running_per_agent: int = 0  # DISPATCHER_MAX_RUNNING_PER_AGENT: the same per agent
    # DISPATCHER_CLAIM_LINGER_MS: with a backlog and runs still going, how long a freed slot may wait for more
    # slots to free before the claim, so one claim takes several rows (docs/performance.md, session 4); 0 = off
    claim_linger_s: float = 0.0
    # DISPATCHER_WRITERS: group-commit writer threads (dispatcher/groupcommit.py), each with its own connection
    writers: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        concurrency = parse_int(env, "DISPATCHER_CONCURRENCY", 4, minimum=1)
        lease_s = parse_float(env, "DISPATCHER_LEASE_S", 30.0, minimum=1.0)
        heartbeat_s = parse_float(env, "DISPATCHER_HEARTBEAT_S", 2.0, minimum=0.05)
        if heartbeat_s * 2 > lease_s:
            raise ConfigError("DISPATCHER_HEARTBEAT_S must be at most half of DISPATCHER_LEASE_S")
        return cls(
            concurrency=concurrency,
            batch_size=parse_int(env, "DISPATCHER_BATCH_SIZE", concurrency, minimum=1),
            poll_interval_s=parse_float(env, "DISPATCHER_POLL_INTERVAL_S", 2.0, minimum=0.05),
            lease_s=lease_s,
            heartbeat_s=heartbeat_s,
            retry_delay_s=parse_float(env, "DISPATCHER_RETRY_DELAY_S", 5.0, minimum=0.0),
            retry_max_delay_s=parse_float(env, "DISPATCHER_RETRY_MAX_DELAY_S", 300.0, minimum=0.0),
            shutdown_grace_s=parse_float(env, "DISPATCHER_SHUTDOWN_GRACE_S", 25.0, minimum=0.0),
            owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            metrics_port=parse_int(env, "DISPATCHER_METRICS_PORT", 0, minimum=0),
            outbox_max_attempts=parse_int(env, "OUTBOX_MAX_ATTEMPTS", 5, minimum=1),
            max_running_per_user=parse_int(env, "DISPATCHER_MAX_RUNNING_PER_USER", 0, minimum=0),
            max_running_per_agent=parse_int(env, "DISPATCHER_MAX_RUNNING_PER_AGENT", 0, minimum=0),
            claim_linger_s=parse_float(env, "DISPATCHER_CLAIM_LINGER_MS", 5.0, minimum=0.0) / 1000,
            writers=parse_int(env, "DISPATCHER_WRITERS", 1, minimum=1),
        )


def parse_run_maxima(env: Mapping[str, str], *, timeout_ms: int, memory: int) -> tuple[int, int | None]:
    """AGENT_RUN_TIMEOUT_MAX_MS (default 300000, or AGENT_RUN_TIMEOUT_MS when larger) and AGENT_RUN_MEMORY_LIMIT_MAX
    (-1 = none): the most an agent may ask for itself; neither may be under the service's default."""
    timeout_max = parse_int(env, "AGENT_RUN_TIMEOUT_MAX_MS", max(300_000, timeout_ms), minimum=1)
    if timeout_max < timeout_ms:
        raise ConfigError(f"AGENT_RUN_TIMEOUT_MAX_MS ({timeout_max}) must be at least AGENT_RUN_TIMEOUT_MS ({timeout_ms})")
    memory_max = parse_int(env, "AGENT_RUN_MEMORY_LIMIT_MAX", -1, minimum=-1)
    if memory_max == 0:
        raise ConfigError("AGENT_RUN_MEMORY_LIMIT_MAX must be a number of bytes, or -1 for no maximum; got 0")
    if 0 < memory_max < memory:
        raise ConfigError(f"AGENT_RUN_MEMORY_LIMIT_MAX ({memory_max}) must be at least AGENT_RUN_MEMORY_LIMIT ({memory})")
    return timeout_max, (None if memory_max < 0 else memory_max)


@dataclass(frozen=True, kw_only=True)
class RunLimitSettings(Section):
    """What one agent run may take and send: time, memory, history, messages, output."""

    run_timeout_ms: int
    run_memory_limit: int | None
    history_max_messages: int
    max_messages: int
    max_message_chars: int
    max_output_chars: int
    # The most an agent's own HUB_RUN_TIMEOUT_MS / HUB_RUN_MEMORY_LIMIT may ask (dispatcher/agentlimits.py).
    run_timeout_max_ms: int = 300_000
    run_memory_limit_max: int | None = None  # None: no maximum of ours (Piston's own still applies)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        timeout = parse_int(env, "AGENT_RUN_TIMEOUT_MS", 3000, minimum=1)
        memory = parse_int(env, "AGENT_RUN_MEMORY_LIMIT", -1, minimum=-1)
        timeout_max, memory_max = parse_run_maxima(env, timeout_ms=timeout, memory=memory)
        return cls(
            run_timeout_ms=timeout,
            run_memory_limit=None if memory < 0 else memory,
            run_timeout_max_ms=timeout_max,
            run_memory_limit_max=memory_max,
            history_max_messages=parse_int(env, "HISTORY_MAX_MESSAGES", 500, minimum=0),
            max_messages=parse_int(env, "MAX_MESSAGES_PER_RUN", 200, minimum=1),
            max_message_chars=parse_int(env, "MAX_MESSAGE_CHARS", 100_000, minimum=1),
            max_output_chars=parse_int(env, "MAX_OUTPUT_CHARS", 2_000_000, minimum=1024),
        )


@dataclass(frozen=True, kw_only=True)
class AgentFilesSettings(Section):
    """Where an agent's files are and how many, how large, how slow they may be."""

    agent_files_root: Path | None
    agent_files_max_count: int
    agent_files_max_bytes: int
    agent_files_http_timeout_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        root = (env.get("AGENT_FILES_ROOT") or "").strip()
        if root and not Path(root).is_dir():
            raise ConfigError(f"AGENT_FILES_ROOT is not a directory: {root}")
        return cls(
            agent_files_root=Path(root).resolve() if root else None,
            agent_files_max_count=parse_int(env, "AGENT_FILES_MAX_COUNT", 50, minimum=1),
            agent_files_max_bytes=parse_int(env, "AGENT_FILES_MAX_BYTES", 80_000, minimum=1),
            agent_files_http_timeout_s=parse_float(env, "AGENT_FILES_HTTP_TIMEOUT_S", 10.0, minimum=0.1),
        )


@dataclass(frozen=True, kw_only=True)
class LLMSettings(Section):
    """hub.call_llm (docs/llm-and-agent-calls.md)."""

    # repr=False: the key never reaches a log line.
    gemini_api_key: str | None = field(default=None, repr=False)
    gemini_base_url: str | None = None
    llm_model: str = "gemini-2.5-flash"
    llm_timeout_s: float = 60.0
    llm_retry_attempts: int = 4
    llm_retry_base_s: float = 1.0
    llm_retry_max_s: float = 10.0
    max_llm_calls: int = 20
    max_llm_calls_max: int = 100  # HUB_MAX_LLM_CALLS_MAX: the most an agent's own HUB_MAX_LLM_CALLS may ask

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        base_url = (parse_text(env, "GEMINI_BASE_URL") or "").rstrip("/")
        model = parse_text(env, "HUB_LLM_MODEL") or "gemini-2.5-flash"
        try:
            split_model(model)  # gemini-…, gemini:…, or openai:…
        except BadModelName as exc:
            raise ConfigError(f"HUB_LLM_MODEL: {exc}, got {model[:80]!r}") from None
        max_calls = parse_int(env, "HUB_MAX_LLM_CALLS", 20, minimum=0)
        max_calls_max = parse_int(env, "HUB_MAX_LLM_CALLS_MAX", max(100, max_calls), minimum=0)
        if max_calls_max < max_calls:
            raise ConfigError(f"HUB_MAX_LLM_CALLS_MAX ({max_calls_max}) must be at least HUB_MAX_LLM_CALLS ({max_calls})")
        return cls(
            gemini_api_key=parse_text(env, "GEMINI_API_KEY"),
            gemini_base_url=base_url or None,
            llm_model=model,
            llm_timeout_s=parse_float(env, "HUB_LLM_TIMEOUT_S", 60.0, minimum=0.1),
            llm_retry_attempts=parse_int(env, "HUB_LLM_RETRY_ATTEMPTS", 4, minimum=1),
            llm_retry_base_s=parse_float(env, "HUB_LLM_RETRY_BASE_S", 1.0, minimum=0.0),
            llm_retry_max_s=parse_float(env, "HUB_LLM_RETRY_MAX_S", 10.0, minimum=0.0),
            max_llm_calls=max_calls,
            max_llm_calls_max=max_calls_max,
        )


@dataclass(frozen=True, kw_only=True)
class AgentCallSettings(Section):
    """hub.call_agent: how deep, and the time kept back for the caller."""

    max_agent_depth: int = 3
    child_time_margin_ms: int = 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        return cls(
            max_agent_depth=parse_int(env, "HUB_MAX_AGENT_DEPTH", 3, minimum=0),
            child_time_margin_ms=parse_int(env, "HUB_CHILD_TIME_MARGIN_MS", 1000, minimum=0),
        )


@dataclass(frozen=True, kw_only=True)
class OpenAISettings(Section):
    """call_llm's ``openai:<name>`` models (dispatcher/llm_openai.py); timeouts and retries are the LLM section's."""

    # repr=False: the key never reaches a log line.
    openai_api_key: str | None = field(default=None, repr=False)  # None: openai: models are not configured
    openai_base_url: str | None = None  # None: OpenAI's own
    openai_max_tokens_field: str = "max_completion_tokens"  # or max_tokens, for servers that only know that one

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        base_url = (parse_text(env, "OPENAI_BASE_URL") or "").rstrip("/") or None
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"OPENAI_BASE_URL must start with http:// or https://, got {base_url!r}")
        return cls(
            openai_api_key=parse_text(env, "OPENAI_API_KEY"),
            openai_base_url=base_url,
            openai_max_tokens_field=parse_choice(env, "OPENAI_MAX_TOKENS_FIELD", "max_completion_tokens",
                                                 ("max_completion_tokens", "max_tokens")),
        )


@dataclass(frozen=True, kw_only=True)
class HttpSettings(Section):
    """hub.http, the brokered HTTP (dispatcher/httpcall/; docs/security.md, "Brokered HTTP")."""

    http_allow_hosts: HostPatterns | None = None  # HUB_HTTP_ALLOW_HOSTS; None: hub.http is off
    http_allow_private: bool = False              # HUB_HTTP_ALLOW_PRIVATE=1: loopback/private/reserved (dev, tests)
    http_max_calls: int = 50                      # per run
    http_max_response_bytes: int = 1 << 20        # decoded body
    http_max_request_bytes: int = 1 << 20         # encoded body
    http_timeout_s: float = 30.0                  # a call's default and largest timeout
    http_max_redirects: int = 5

    @property
    def http_enabled(self) -> bool:
        return self.http_allow_hosts is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        try:
            allow_hosts = HostPatterns.parse(env.get("HUB_HTTP_ALLOW_HOSTS"), "HUB_HTTP_ALLOW_HOSTS")
        except HostPatternError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            http_allow_hosts=allow_hosts,
            http_allow_private=parse_flag(env, "HUB_HTTP_ALLOW_PRIVATE"),
            http_max_calls=parse_int(env, "HUB_HTTP_MAX_CALLS", 50, minimum=0),
            http_max_response_bytes=parse_int(env, "HUB_HTTP_MAX_RESPONSE_BYTES", 1 << 20, minimum=1),
            http_max_request_bytes=parse_int(env, "HUB_HTTP_MAX_REQUEST_BYTES", 1 << 20, minimum=0),
            http_timeout_s=parse_float(env, "HUB_HTTP_TIMEOUT_S", 30.0, minimum=0.1),
            http_max_redirects=parse_int(env, "HUB_HTTP_MAX_REDIRECTS", 5, minimum=0),
        )


# Parsed in this order; each section stops at its first bad variable (the error names it).
SECTIONS: tuple[type[Section], ...] = (
    PistonSettings, LoopSettings, AgentFilesSettings, RunLimitSettings, DatabaseSettings, LLMSettings,
    AgentCallSettings, OpenAISettings, HttpSettings,
)


@dataclass(frozen=True, kw_only=True)
class DispatcherConfig(HttpSettings, OpenAISettings, AgentCallSettings, LLMSettings, AgentFilesSettings,
                       RunLimitSettings, LoopSettings, PistonSettings, DatabaseSettings):
    """Every dispatcher setting: the sections above, under their flat names."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for section in SECTIONS:
            values.update(section.values(env))
        return cls(**values)
