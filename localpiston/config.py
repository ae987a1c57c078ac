"""Server configuration from PISTON_* environment variables, parsed and validated as Piston does.

Piston parses every numeric option with JavaScript's `parseInt` and only rejects NaN (plus
`max_concurrent_jobs <= 0` and unparsable `PISTON_LIMIT_OVERRIDES`); a bad value stops the server
at start-up with one line.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .jscompat import js_string, parse_int

OVERRIDABLE = (
    "max_process_count",
    "max_open_files",
    "max_file_size",
    "compile_memory_limit",
    "run_memory_limit",
    "compile_timeout",
    "run_timeout",
    "compile_cpu_time",
    "run_cpu_time",
    "output_max_size",
)

NUMERIC_DEFAULTS: dict[str, int] = {
    "output_max_size": 1024,
    "max_process_count": 64,
    "max_open_files": 2048,
    "max_file_size": 10_000_000,
    "compile_timeout": 10_000,
    "run_timeout": 3_000,
    "compile_cpu_time": 10_000,
    "run_cpu_time": 3_000,
    "compile_memory_limit": -1,
    "run_memory_limit": -1,
    "max_concurrent_jobs": 64,
}


class ConfigError(Exception):
    """A PISTON_* variable failed validation; the message is the one line shown at start-up."""


def _not_nan(value: float, raw: Any) -> str | None:
    return f"{js_string(raw)} is not a number" if isinstance(value, float) and math.isnan(value) else None


def _positive(value: float, raw: Any) -> str | None:
    return None if value > 0 else f"{js_string(value)} cannot be negative"


VALIDATORS: dict[str, Callable[[float, Any], str | None]] = {
    name: (_positive if name == "max_concurrent_jobs" else _not_nan) for name in NUMERIC_DEFAULTS
}


@dataclass(frozen=True)
class Config:
    output_max_size: int = 1024
    max_process_count: int = 64
    max_open_files: int = 2048
    max_file_size: int = 10_000_000
    compile_timeout: int = 10_000
    run_timeout: int = 3_000
    compile_cpu_time: int = 10_000
    run_cpu_time: int = 3_000
    compile_memory_limit: int = -1
    run_memory_limit: int = -1
    max_concurrent_jobs: int = 64
    disable_networking: bool = True
    limit_overrides: dict[str, dict[str, int]] = field(default_factory=dict)
    bind_address: str = "127.0.0.1:2000"
    python: str | None = None  # PISTON_PYTHON: interpreter to run code with (localpiston only)
    # PISTON_DISABLE_WEBSOCKET (localpiston only): serve no /api/v2/connect, like a Piston behind a
    # proxy that drops WebSocket upgrades, so clients' fallback to /execute can be tested end to end.
    websocket: bool = True

    def limit(self, language: str, name: str) -> int:
        """Piston's compute_single_limit: override `||` global (so an override of 0 falls back)."""
        override = self.limit_overrides.get(language, {}).get(name)
        if override:
            return override
        value: int = getattr(self, name)
        return value


def _parse_overrides(raw: str) -> dict[str, dict[str, int]]:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    failure = ConfigError(f"Config option limit_overrides failed validation: Failed to parse the overrides\n{raw}")
    if data is None:
        raise failure
    parsed: dict[str, dict[str, int]] = {}
    languages: Mapping[str, Any] = data if isinstance(data, dict) else {}
    if isinstance(data, list | str):
        languages = {str(i): item for i, item in enumerate(data)}
    for language, limits in languages.items():
        parsed[language] = {}
        if isinstance(limits, dict):
            items: Mapping[str, Any] = limits
        elif isinstance(limits, list | str):
            items = {str(i): item for i, item in enumerate(limits)}
        else:
            items = {}
        for key, raw_value in items.items():
            if key not in OVERRIDABLE:
                raise failure
            value = parse_int(raw_value)
            problem = VALIDATORS[key](value, value)
            if problem:
                raise ConfigError(
                    f"Config option limit_overrides failed validation: In overridden option {key} for {language}, {problem}"
                )
            parsed[language][key] = int(value)
    return parsed


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, default in NUMERIC_DEFAULTS.items():
        raw = env.get("PISTON_" + name.upper())
        if raw is None:
            values[name] = default
            continue
        value = parse_int(raw)
        problem = VALIDATORS[name](value, raw)
        if problem:
            raise ConfigError(f"Config option {name} failed validation: {problem}")
        values[name] = int(value)
    raw_net = env.get("PISTON_DISABLE_NETWORKING")
    values["disable_networking"] = True if raw_net is None else raw_net == "true"
    raw_overrides = env.get("PISTON_LIMIT_OVERRIDES")
    values["limit_overrides"] = {} if raw_overrides is None else _parse_overrides(raw_overrides)
    values["bind_address"] = env.get("PISTON_BIND_ADDRESS", "127.0.0.1:2000")
    values["python"] = env.get("PISTON_PYTHON") or None
    raw_ws = env.get("PISTON_DISABLE_WEBSOCKET", "false")
    if raw_ws not in ("true", "false"):  # not a Piston option: no reason to copy its leniency
        raise ConfigError(f"Config option disable_websocket failed validation: {raw_ws} is not true or false")
    values["websocket"] = raw_ws == "false"
    return Config(**values)
