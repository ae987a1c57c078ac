"""Configuration, read from the environment only.

Every setting is documented in the README's configuration table. A bad value
fails at start with one clear line (``ConfigError``), never later at run time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


MIN_TOKEN_CHARS = 16


def _token(env: Mapping[str, str], name: str) -> str | None:
    """A shared secret: unset/empty means none; a short or spaced one is refused (never echoed)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    if raw.strip() != raw or any(c.isspace() or not c.isprintable() for c in raw):
        raise ConfigError(f"{name} must not contain spaces or control characters")
    if len(raw) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{name} must be at least {MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`)")
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = (env.get(name) or "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name} must be 1 or 0, got {value!r}")


def database_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    url = (env.get("DATABASE_URL") or "").strip()
    if not url:
        raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user:pass@host:5432/db)")
    if not url.startswith(("postgres://", "postgresql://")):
        raise ConfigError("DATABASE_URL must start with postgresql:// or postgres://")
    return url


@dataclass(frozen=True)
class IngressConfig:
    database_url: str
    pool_min: int
    pool_max: int
    pool_timeout_s: float
    statement_timeout_ms: int
    max_body_bytes: int
    max_prompt_chars: int
    max_id_chars: int
    max_attempts: int
    # INGRESS_TOKEN: callers must send `Authorization: Bearer <token>` (docs/security.md). repr=False: never logged.
    ingress_token: str | None = field(default=None, repr=False)
    allow_unauthenticated: bool = False  # ALLOW_UNAUTHENTICATED=1: serve without a token on a non-loopback address

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IngressConfig:
        env = os.environ if env is None else env
        pool_min = _int(env, "DB_POOL_MIN", 1, minimum=0)
        pool_max = _int(env, "DB_POOL_MAX", 10, minimum=1)
        if pool_min > pool_max:
            raise ConfigError(f"DB_POOL_MIN ({pool_min}) must not exceed DB_POOL_MAX ({pool_max})")
        max_prompt = _int(env, "MAX_PROMPT_CHARS", 32_000, minimum=1)
        max_body = _int(env, "MAX_BODY_BYTES", 256 * 1024, minimum=1024)
        return cls(
            database_url=database_url(env),
            pool_min=pool_min,
            pool_max=pool_max,
            pool_timeout_s=_float(env, "DB_POOL_TIMEOUT", 5.0, minimum=0.1),
            statement_timeout_ms=_int(env, "DB_STATEMENT_TIMEOUT_MS", 5000, minimum=0),
            max_body_bytes=max_body,
            max_prompt_chars=max_prompt,
            max_id_chars=_int(env, "MAX_ID_CHARS", 191, minimum=8),
            max_attempts=_int(env, "OUTBOX_MAX_ATTEMPTS", 5, minimum=1),
            ingress_token=_token(env, "INGRESS_TOKEN"),
            allow_unauthenticated=_flag(env, "ALLOW_UNAUTHENTICATED"),
        )


@dataclass(frozen=True)
class StreamConfig:
    """The web process's serving model and its SSE streams (ingress/asgi.py, ingress/sse.py)."""

    keepalive_s: float      # SSE_KEEPALIVE_S: a comment line on an idle stream this often (proxies drop silent ones)
    slow_client_s: float    # SSE_SLOW_CLIENT_S: a stream whose client reads nothing for this long is dropped
    page_events: int        # SSE_PAGE_EVENTS: events read from the feed per query, at most
    page_chars: int         # SSE_PAGE_CHARS: characters of data read per query, at most (one event more)
    pool_max: int           # SSE_DB_POOL_MAX: connections of the streams' own pool, per web worker
    idle_timeout_s: float   # WEB_IDLE_TIMEOUT_S: a connection without a complete request head is closed after this
    body_timeout_s: float   # WEB_BODY_TIMEOUT_S: a request body that stops arriving for this long gets 408

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StreamConfig:
        env = os.environ if env is None else env
        return cls(
            keepalive_s=_float(env, "SSE_KEEPALIVE_S", 15.0, minimum=0.05),
            slow_client_s=_float(env, "SSE_SLOW_CLIENT_S", 10.0, minimum=0.1),
            page_events=_int(env, "SSE_PAGE_EVENTS", 200, minimum=1),
            page_chars=_int(env, "SSE_PAGE_CHARS", 256 * 1024, minimum=1024),
            pool_max=_int(env, "SSE_DB_POOL_MAX", 4, minimum=1),
            idle_timeout_s=_float(env, "WEB_IDLE_TIMEOUT_S", 5.0, minimum=0.1),
            body_timeout_s=_float(env, "WEB_BODY_TIMEOUT_S", 10.0, minimum=0.1),
        )


@dataclass(frozen=True)
class LogConfig:
    fmt: str
    level: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LogConfig:
        env = os.environ if env is None else env
        return cls(
            fmt=_choice(env, "LOG_FORMAT", "json", ("json", "console")),
            level=_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        )


__all__ = [
    "ConfigError",
    "IngressConfig",
    "LogConfig",
    "StreamConfig",
    "_choice",
    "_float",
    "_int",
    "database_url",
]
