"""Configuration, read from the environment only.

Every setting is documented in the README's configuration table. A bad value
fails at start with one clear line (``ConfigError``), never later at run time.

The ``parse_*`` functions read one variable each (empty means the default) and are what every
config here and in dispatcher/config.py is built from. A process's config is made of sections
(``Section`` subclasses: database, request limits, auth; the dispatcher's piston, run limits, LLM,
...), each parsed by its own ``from_env``; the process config inherits them all, so a setting keeps
one flat name (``cfg.pool_max``) and code that needs one section can ask for just that type and
take it out with ``Section.of(cfg)``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


def parse_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
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


def parse_float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
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


def parse_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


MIN_TOKEN_CHARS = 16


def parse_token(env: Mapping[str, str], name: str) -> str | None:
    """A shared secret: unset/empty means none; a short or spaced one is refused (never echoed)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    if raw.strip() != raw or any(c.isspace() or not c.isprintable() for c in raw):
        raise ConfigError(f"{name} must not contain spaces or control characters")
    if len(raw) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{name} must be at least {MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`)")
    return raw


def parse_flag(env: Mapping[str, str], name: str) -> bool:
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


def parse_text(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """A free-form value, surrounding spaces removed; unset or empty means ``default``."""
    return (env.get(name) or "").strip() or default


@dataclass(frozen=True, kw_only=True)
class Section:
    """A group of settings with its own parser (``from_env``)."""

    @classmethod
    def of(cls, cfg: Section) -> Self:
        """This section's settings out of a config that includes it (e.g. ``LLMSettings.of(dispatcher_cfg)``)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def values(cls, env: Mapping[str, str]) -> dict[str, Any]:
        """This section's settings from ``env``, by field name (to build a config of several sections)."""
        section = cls.from_env(env)
        return {f.name: getattr(section, f.name) for f in dataclasses.fields(cls)}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class WebDatabaseSettings(Section):
    """The web process's database: where, how many connections, how long to wait."""

    database_url: str
    pool_min: int
    pool_max: int
    pool_timeout_s: float
    statement_timeout_ms: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        pool_min = parse_int(env, "DB_POOL_MIN", 1, minimum=0)
        pool_max = parse_int(env, "DB_POOL_MAX", 10, minimum=1)
        if pool_min > pool_max:
            raise ConfigError(f"DB_POOL_MIN ({pool_min}) must not exceed DB_POOL_MAX ({pool_max})")
        return cls(
            database_url=database_url(env),
            pool_min=pool_min,
            pool_max=pool_max,
            pool_timeout_s=parse_float(env, "DB_POOL_TIMEOUT", 5.0, minimum=0.1),
            statement_timeout_ms=parse_int(env, "DB_STATEMENT_TIMEOUT_MS", 5000, minimum=0),
        )


@dataclass(frozen=True, kw_only=True)
class RequestLimits(Section):
    """What one invoke request may be, and the attempts its row gets."""

    max_body_bytes: int
    max_prompt_chars: int
    max_id_chars: int
    max_attempts: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        return cls(
            max_prompt_chars=parse_int(env, "MAX_PROMPT_CHARS", 32_000, minimum=1),
            max_body_bytes=parse_int(env, "MAX_BODY_BYTES", 256 * 1024, minimum=1024),
            max_id_chars=parse_int(env, "MAX_ID_CHARS", 191, minimum=8),
            max_attempts=parse_int(env, "OUTBOX_MAX_ATTEMPTS", 5, minimum=1),
        )


@dataclass(frozen=True, kw_only=True)
class AuthSettings(Section):
    # INGRESS_TOKEN: callers must send `Authorization: Bearer <token>` (docs/security.md). repr=False: never logged.
    ingress_token: str | None = field(default=None, repr=False)
    allow_unauthenticated: bool = False  # ALLOW_UNAUTHENTICATED=1: serve without a token on a non-loopback address

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        return cls(
            ingress_token=parse_token(env, "INGRESS_TOKEN"),
            allow_unauthenticated=parse_flag(env, "ALLOW_UNAUTHENTICATED"),
        )


SESSION_POLICIES = ("enqueue", "interrupt", "reject")  # ingress/admission.py's SessionPolicy
RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0,
              "d": 86400.0, "day": 86400.0}


def parse_rate(env: Mapping[str, str], name: str) -> tuple[int, float]:
    """A rate like ``30/min`` (units: s, min, h, day; ``500/10min`` too): (count, window in seconds); unset or
    empty means none, (0, 60.0)."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return 0, 60.0
    count, _, per = raw.partition("/")
    per = per.strip().lower()
    digits = per.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = per[len(digits):]
    problem = f"{name} must be a count per window, e.g. 30/min, 500/h or 100/10min, got {raw!r}"
    if not count.strip().isdigit() or int(count) < 1 or unit not in RATE_UNITS:
        raise ConfigError(problem)
    if digits and (not digits.strip().isdigit() or int(digits) < 1):
        raise ConfigError(problem)
    return int(count), RATE_UNITS[unit] * (int(digits) if digits else 1)


@dataclass(frozen=True, kw_only=True)
class AdmissionSettings(Section):
    # HUB_SESSION_POLICY: what a prompt for a session with a job queued or running does (ingress/admission.py).
    session_policy: str = "enqueue"
    # INGRESS_RATE_PER_USER: a user's prompts accepted per window (0: no limit); more get 429 rate_limited.
    rate_limit: int = 0
    rate_window_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        rate_limit, rate_window_s = parse_rate(env, "INGRESS_RATE_PER_USER")
        return cls(session_policy=parse_choice(env, "HUB_SESSION_POLICY", "enqueue", SESSION_POLICIES),
                   rate_limit=rate_limit, rate_window_s=rate_window_s)


@dataclass(frozen=True, kw_only=True)
class IngressConfig(AdmissionSettings, AuthSettings, RequestLimits, WebDatabaseSettings):
    """The web process's settings: its database, request limits, auth and session policy."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        return cls(**WebDatabaseSettings.values(env), **RequestLimits.values(env), **AuthSettings.values(env),
                   **AdmissionSettings.values(env))


@dataclass(frozen=True, kw_only=True)
class StreamConfig(Section):
    """The web process's serving model and its SSE streams (ingress/asgi.py, ingress/sse.py)."""

    keepalive_s: float      # SSE_KEEPALIVE_S: a comment line on an idle stream this often (proxies drop silent ones)
    slow_client_s: float    # SSE_SLOW_CLIENT_S: a stream whose client reads nothing for this long is dropped
    page_events: int        # SSE_PAGE_EVENTS: events read from the feed per query, at most
    page_chars: int         # SSE_PAGE_CHARS: characters of data read per query, at most (one event more)
    pool_max: int           # SSE_DB_POOL_MAX: connections of the streams' own pool, per web worker
    idle_timeout_s: float   # WEB_IDLE_TIMEOUT_S: a connection without a complete request head is closed after this
    body_timeout_s: float   # WEB_BODY_TIMEOUT_S: a request body that stops arriving for this long gets 408

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        return cls(
            keepalive_s=parse_float(env, "SSE_KEEPALIVE_S", 15.0, minimum=0.05),
            slow_client_s=parse_float(env, "SSE_SLOW_CLIENT_S", 10.0, minimum=0.1),
            page_events=parse_int(env, "SSE_PAGE_EVENTS", 200, minimum=1),
            page_chars=parse_int(env, "SSE_PAGE_CHARS", 256 * 1024, minimum=1024),
            pool_max=parse_int(env, "SSE_DB_POOL_MAX", 4, minimum=1),
            idle_timeout_s=parse_float(env, "WEB_IDLE_TIMEOUT_S", 5.0, minimum=0.1),
            body_timeout_s=parse_float(env, "WEB_BODY_TIMEOUT_S", 10.0, minimum=0.1),
        )


@dataclass(frozen=True, kw_only=True)
class LogConfig(Section):
    """Every process's logging."""

    fmt: str
    level: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        return cls(
            fmt=parse_choice(env, "LOG_FORMAT", "json", ("json", "console")),
            level=parse_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        )


__all__ = [
    "MIN_TOKEN_CHARS",
    "SESSION_POLICIES",
    "AdmissionSettings",
    "AuthSettings",
    "ConfigError",
    "IngressConfig",
    "LogConfig",
    "RequestLimits",
    "Section",
    "StreamConfig",
    "WebDatabaseSettings",
    "database_url",
    "parse_choice",
    "parse_flag",
    "parse_float",
    "parse_int",
    "parse_rate",
    "parse_text",
    "parse_token",
]
