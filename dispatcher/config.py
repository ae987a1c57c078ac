"""Dispatcher configuration, from the environment only (see the README's table)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.config import ConfigError, _choice, _float, _int, database_url


@dataclass(frozen=True)
class DispatcherConfig:
    database_url: str
    piston_url: str
    piston_transport: str  # ws | execute | auto
    concurrency: int
    batch_size: int
    poll_interval_s: float
    lease_s: float
    heartbeat_s: float
    retry_delay_s: float
    retry_max_delay_s: float
    piston_retry_attempts: int
    piston_retry_base_s: float
    piston_retry_max_s: float
    run_timeout_ms: int
    run_memory_limit: int | None
    piston_max_body_bytes: int
    history_max_messages: int
    max_messages: int
    max_message_chars: int
    max_output_chars: int
    agent_files_root: Path | None
    agent_files_max_count: int
    agent_files_max_bytes: int
    agent_files_http_timeout_s: float
    shutdown_grace_s: float
    owner: str
    # hub.call_llm / hub.call_agent (docs/llm-and-agent-calls.md). repr=False: the key never reaches a log line.
    gemini_api_key: str | None = field(default=None, repr=False)
    gemini_base_url: str | None = None
    llm_model: str = "gemini-2.5-flash"
    llm_timeout_s: float = 60.0
    llm_retry_attempts: int = 4
    llm_retry_base_s: float = 1.0
    llm_retry_max_s: float = 10.0
    max_llm_calls: int = 20
    max_agent_depth: int = 3
    child_time_margin_ms: int = 1000
    metrics_port: int = 0  # DISPATCHER_METRICS_PORT: /metrics HTTP server; 0 = off (docs/operations.md)
    outbox_max_attempts: int = 5  # OUTBOX_MAX_ATTEMPTS, as the web's: for the rows scheduled runs queue
    max_running_per_user: int = 0  # DISPATCHER_MAX_RUNNING_PER_USER: live runs of one user, all dispatchers; 0 = no cap
    max_running_per_agent: int = 0  # DISPATCHER_MAX_RUNNING_PER_AGENT: the same per agent

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DispatcherConfig:
        env = os.environ if env is None else env
        piston_url = (env.get("PISTON_URL") or "").strip().rstrip("/")
        if not piston_url:
            raise ConfigError("PISTON_URL is not set (e.g. http://127.0.0.1:2000)")
        if not piston_url.startswith(("http://", "https://")):
            raise ConfigError(f"PISTON_URL must start with http:// or https://, got {piston_url!r}")
        concurrency = _int(env, "DISPATCHER_CONCURRENCY", 4, minimum=1)
        root = (env.get("AGENT_FILES_ROOT") or "").strip()
        if root and not Path(root).is_dir():
            raise ConfigError(f"AGENT_FILES_ROOT is not a directory: {root}")
        memory = _int(env, "AGENT_RUN_MEMORY_LIMIT", -1, minimum=-1)
        lease_s = _float(env, "DISPATCHER_LEASE_S", 30.0, minimum=1.0)
        heartbeat_s = _float(env, "DISPATCHER_HEARTBEAT_S", 2.0, minimum=0.05)
        if heartbeat_s * 2 > lease_s:
            raise ConfigError("DISPATCHER_HEARTBEAT_S must be at most half of DISPATCHER_LEASE_S")
        return cls(
            database_url=database_url(env),
            piston_url=piston_url,
            piston_transport=_choice(env, "PISTON_TRANSPORT", "auto", ("ws", "execute", "auto")),
            concurrency=concurrency,
            batch_size=_int(env, "DISPATCHER_BATCH_SIZE", concurrency, minimum=1),
            poll_interval_s=_float(env, "DISPATCHER_POLL_INTERVAL_S", 2.0, minimum=0.05),
            lease_s=lease_s,
            heartbeat_s=heartbeat_s,
            retry_delay_s=_float(env, "DISPATCHER_RETRY_DELAY_S", 5.0, minimum=0.0),
            retry_max_delay_s=_float(env, "DISPATCHER_RETRY_MAX_DELAY_S", 300.0, minimum=0.0),
            piston_retry_attempts=_int(env, "PISTON_RETRY_ATTEMPTS", 4, minimum=1),
            piston_retry_base_s=_float(env, "PISTON_RETRY_BASE_S", 0.5, minimum=0.0),
            piston_retry_max_s=_float(env, "PISTON_RETRY_MAX_S", 8.0, minimum=0.0),
            run_timeout_ms=_int(env, "AGENT_RUN_TIMEOUT_MS", 3000, minimum=1),
            run_memory_limit=None if memory < 0 else memory,
            piston_max_body_bytes=_int(env, "PISTON_MAX_BODY_BYTES", 100_000, minimum=10_000),
            history_max_messages=_int(env, "HISTORY_MAX_MESSAGES", 500, minimum=0),
            max_messages=_int(env, "MAX_MESSAGES_PER_RUN", 200, minimum=1),
            max_message_chars=_int(env, "MAX_MESSAGE_CHARS", 100_000, minimum=1),
            max_output_chars=_int(env, "MAX_OUTPUT_CHARS", 2_000_000, minimum=1024),
            agent_files_root=Path(root).resolve() if root else None,
            agent_files_max_count=_int(env, "AGENT_FILES_MAX_COUNT", 50, minimum=1),
            agent_files_max_bytes=_int(env, "AGENT_FILES_MAX_BYTES", 80_000, minimum=1),
            agent_files_http_timeout_s=_float(env, "AGENT_FILES_HTTP_TIMEOUT_S", 10.0, minimum=0.1),
            shutdown_grace_s=_float(env, "DISPATCHER_SHUTDOWN_GRACE_S", 25.0, minimum=0.0),
            owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            gemini_api_key=(env.get("GEMINI_API_KEY") or "").strip() or None,
            gemini_base_url=(env.get("GEMINI_BASE_URL") or "").strip().rstrip("/") or None,
            llm_model=(env.get("HUB_LLM_MODEL") or "").strip() or "gemini-2.5-flash",
            llm_timeout_s=_float(env, "HUB_LLM_TIMEOUT_S", 60.0, minimum=0.1),
            llm_retry_attempts=_int(env, "HUB_LLM_RETRY_ATTEMPTS", 4, minimum=1),
            llm_retry_base_s=_float(env, "HUB_LLM_RETRY_BASE_S", 1.0, minimum=0.0),
            llm_retry_max_s=_float(env, "HUB_LLM_RETRY_MAX_S", 10.0, minimum=0.0),
            max_llm_calls=_int(env, "HUB_MAX_LLM_CALLS", 20, minimum=0),
            max_agent_depth=_int(env, "HUB_MAX_AGENT_DEPTH", 3, minimum=0),
            child_time_margin_ms=_int(env, "HUB_CHILD_TIME_MARGIN_MS", 1000, minimum=0),
            metrics_port=_int(env, "DISPATCHER_METRICS_PORT", 0, minimum=0),
            outbox_max_attempts=_int(env, "OUTBOX_MAX_ATTEMPTS", 5, minimum=1),
            max_running_per_user=_int(env, "DISPATCHER_MAX_RUNNING_PER_USER", 0, minimum=0),
            max_running_per_agent=_int(env, "DISPATCHER_MAX_RUNNING_PER_AGENT", 0, minimum=0),
        )
