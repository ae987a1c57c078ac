"""Unit checks of the JS/semver/config emulation used by the server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from localpiston.config import ConfigError, load_config
from localpiston.jscompat import node_base64_decode, node_hex_decode, parse_int
from localpiston.semver import satisfies

from .conftest import REPO


@pytest.mark.parametrize(
    ("version", "range_", "expected"),
    [
        ("3.11.7", "*", True),
        ("3.11.7", "3.x", True),
        ("3.11.7", "3", True),
        ("3.11.7", "3.11", True),
        ("3.11.7", "3.11.7", True),
        ("3.11.7", "v3.11.7", True),
        ("3.11.7", "3.11.6", False),
        ("3.11.7", "3.12.x", False),
        ("3.11.7", "latest", False),
        ("3.11.7", ">=3.10 <3.12", True),
        ("3.11.7", "~3.11.2", True),
        ("3.11.7", "^3.1", True),
        ("3.11.7", "2.x || 3.11.x", True),
        ("3.11.7", "3.0 - 3.11", True),
        ("3.11.7", "3.12 - 4", False),
    ],
)
def test_semver_range_matching_follows_node_semver(version: str, range_: str, expected: bool) -> None:
    assert satisfies(version, range_) is expected


def test_parse_int_is_javascript_parseint() -> None:
    assert parse_int("3000ms") == 3000
    assert parse_int(" -5") == -5
    assert parse_int("0x10") == 16
    assert parse_int("abc") != parse_int("abc")  # NaN


def test_node_decoders_are_lenient_like_buffer_from() -> None:
    assert node_base64_decode("aGk") == b"hi"
    assert node_base64_decode("aG k=trailing") == b"hi"
    assert node_hex_decode("6869zz41") == b"hi"
    assert node_hex_decode("686") == b"h"


def test_config_defaults_match_piston() -> None:
    config = load_config({})
    assert (config.run_timeout, config.compile_timeout, config.run_cpu_time, config.output_max_size) == (3000, 10000, 3000, 1024)
    assert (config.max_process_count, config.max_open_files, config.max_file_size) == (64, 2048, 10_000_000)
    assert (config.run_memory_limit, config.max_concurrent_jobs, config.disable_networking) == (-1, 64, True)


def test_config_override_of_zero_falls_back_to_global() -> None:
    config = load_config({"PISTON_LIMIT_OVERRIDES": '{"python": {"run_timeout": 0, "output_max_size": 99}}'})
    assert config.limit("python", "run_timeout") == 3000
    assert config.limit("python", "output_max_size") == 99


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"PISTON_RUN_TIMEOUT": "abc"}, "run_timeout failed validation: abc is not a number"),
        ({"PISTON_MAX_CONCURRENT_JOBS": "0"}, "max_concurrent_jobs failed validation: 0 cannot be negative"),
        ({"PISTON_LIMIT_OVERRIDES": "{bad"}, "Failed to parse the overrides"),
        ({"PISTON_LIMIT_OVERRIDES": '{"python": {"colour": 1}}'}, "Failed to parse the overrides"),
    ],
)
def test_bad_config_is_rejected(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(env)


def test_bad_config_stops_the_server_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "localpiston", "--port", "1"],
        cwd=REPO,
        env={"PISTON_RUN_TIMEOUT": "soon", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["localpiston: Config option run_timeout failed validation: soon is not a number"]
