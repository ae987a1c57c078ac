"""IngressConfig/LogConfig: defaults, and one clear ConfigError naming the bad variable."""

from __future__ import annotations

import pytest

from core.config import ConfigError, IngressConfig, LogConfig, database_url

URL = "postgresql://u:p@db.example:5432/hub"


def test_defaults_apply_when_only_database_url_is_set() -> None:
    cfg = IngressConfig.from_env({"DATABASE_URL": URL})
    assert cfg.database_url == URL
    assert (cfg.pool_min, cfg.pool_max) == (1, 10)
    assert cfg.pool_timeout_s == 5.0
    assert cfg.statement_timeout_ms == 5000
    assert cfg.max_body_bytes == 256 * 1024
    assert cfg.max_prompt_chars == 32_000
    assert cfg.max_id_chars == 191
    assert cfg.max_attempts == 5


def test_every_variable_is_read_and_surrounding_spaces_are_ignored() -> None:
    cfg = IngressConfig.from_env(
        {
            "DATABASE_URL": f"  {URL}  ",
            "DB_POOL_MIN": " 2 ",
            "DB_POOL_MAX": "3",
            "DB_POOL_TIMEOUT": "0.5",
            "DB_STATEMENT_TIMEOUT_MS": "250",
            "MAX_BODY_BYTES": "4096",
            "MAX_PROMPT_CHARS": "100",
            "MAX_ID_CHARS": "64",
            "OUTBOX_MAX_ATTEMPTS": "7",
        }
    )
    assert cfg == IngressConfig(
        database_url=URL,
        pool_min=2,
        pool_max=3,
        pool_timeout_s=0.5,
        statement_timeout_ms=250,
        max_body_bytes=4096,
        max_prompt_chars=100,
        max_id_chars=64,
        max_attempts=7,
    )


def test_empty_values_mean_the_default() -> None:
    cfg = IngressConfig.from_env({"DATABASE_URL": URL, "DB_POOL_MAX": "", "MAX_PROMPT_CHARS": "  "})
    assert cfg.pool_max == 10
    assert cfg.max_prompt_chars == 32_000


def test_postgres_scheme_alias_is_accepted() -> None:
    assert database_url({"DATABASE_URL": "postgres://u@h/db"}) == "postgres://u@h/db"


@pytest.mark.parametrize("env", [{}, {"DATABASE_URL": ""}, {"DATABASE_URL": "   "}])
def test_unset_database_url_names_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"^DATABASE_URL is not set"):
        IngressConfig.from_env(env)


@pytest.mark.parametrize("url", ["mysql://u@h/db", "localhost:5432/db", "http://h/db"])
def test_malformed_database_url_names_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^DATABASE_URL must start with postgresql://"):
        IngressConfig.from_env({"DATABASE_URL": url})


def test_pool_min_above_pool_max_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"DB_POOL_MIN \(5\) must not exceed DB_POOL_MAX \(2\)"):
        IngressConfig.from_env({"DATABASE_URL": URL, "DB_POOL_MIN": "5", "DB_POOL_MAX": "2"})


@pytest.mark.parametrize(
    "name",
    ["DB_POOL_MIN", "DB_POOL_MAX", "DB_STATEMENT_TIMEOUT_MS", "MAX_BODY_BYTES", "MAX_PROMPT_CHARS", "MAX_ID_CHARS",
     "OUTBOX_MAX_ATTEMPTS"],
)
@pytest.mark.parametrize("raw", ["ten", "1.5", "0x10"])
def test_non_integer_value_names_the_variable_and_the_value(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as exc:
        IngressConfig.from_env({"DATABASE_URL": URL, name: raw})
    assert str(exc.value) == f"{name} must be an integer, got {raw!r}"


def test_non_numeric_pool_timeout_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^DB_POOL_TIMEOUT must be a number, got 'soon'$"):
        IngressConfig.from_env({"DATABASE_URL": URL, "DB_POOL_TIMEOUT": "soon"})


@pytest.mark.parametrize(
    ("name", "raw", "minimum"),
    [
        ("DB_POOL_MIN", "-1", "0"),
        ("DB_POOL_MAX", "0", "1"),
        ("MAX_BODY_BYTES", "1023", "1024"),
        ("MAX_PROMPT_CHARS", "0", "1"),
        ("MAX_ID_CHARS", "7", "8"),
        ("OUTBOX_MAX_ATTEMPTS", "0", "1"),
        ("DB_POOL_TIMEOUT", "0.01", "0.1"),
    ],
)
def test_value_below_its_minimum_names_the_variable(name: str, raw: str, minimum: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name} must be >= {minimum}, got "):
        IngressConfig.from_env({"DATABASE_URL": URL, name: raw})


def test_several_bad_settings_still_give_one_single_line_error_naming_one_of_them() -> None:
    # Whichever is reported, the message is a single line naming one variable.
    with pytest.raises(ConfigError) as exc:
        IngressConfig.from_env({"DB_POOL_MAX": "many"})
    assert "\n" not in str(exc.value)
    assert str(exc.value).split()[0] in {"DB_POOL_MAX", "DATABASE_URL"}


def test_log_config_defaults_and_case_insensitivity() -> None:
    assert LogConfig.from_env({}) == LogConfig(fmt="json", level="info")
    assert LogConfig.from_env({"LOG_FORMAT": "Console", "LOG_LEVEL": " DEBUG "}) == LogConfig(fmt="console", level="debug")


@pytest.mark.parametrize(("name", "raw"), [("LOG_FORMAT", "xml"), ("LOG_LEVEL", "loud")])
def test_log_config_bad_choice_names_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name} must be one of "):
        LogConfig.from_env({name: raw})


def test_session_policy_defaults_to_enqueue_and_a_bad_one_is_named() -> None:
    assert IngressConfig.from_env({"DATABASE_URL": URL}).session_policy == "enqueue"
    assert IngressConfig.from_env({"DATABASE_URL": URL, "HUB_SESSION_POLICY": " Reject "}).session_policy == "reject"
    with pytest.raises(ConfigError, match=r"^HUB_SESSION_POLICY must be one of enqueue, interrupt, reject, got 'drop'$"):
        IngressConfig.from_env({"DATABASE_URL": URL, "HUB_SESSION_POLICY": "drop"})


@pytest.mark.parametrize(("raw", "rate"), [("", (0, 60.0)), ("30/min", (30, 60.0)), (" 500 / h ", (500, 3600.0)),
                                          ("100/10min", (100, 600.0)), ("2/s", (2, 1.0)), ("1000/day", (1000, 86400.0))])
def test_the_rate_per_user_is_a_count_per_window(raw: str, rate: tuple[int, float]) -> None:
    cfg = IngressConfig.from_env({"DATABASE_URL": URL, "INGRESS_RATE_PER_USER": raw})
    assert (cfg.rate_limit, cfg.rate_window_s) == rate


@pytest.mark.parametrize("raw", ["30", "30/", "0/min", "x/min", "30/fortnight", "30/0min", "-1/min"])
def test_a_bad_rate_per_user_is_named(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^INGRESS_RATE_PER_USER must be a count per window, e.g. 30/min"):
        IngressConfig.from_env({"DATABASE_URL": URL, "INGRESS_RATE_PER_USER": raw})
