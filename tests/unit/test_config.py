"""Settings validation at start-up (errors name the variable) and the redacted dump."""

from __future__ import annotations

import json

import pytest

from taskexec.core.config import ConfigError, Settings, load_settings, mask_url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MAX_CONCURRENT_TASKS",
        "EXECUTION_TIMEOUT",
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "LOG_LEVEL",
        "TEL_JWT_SECRET",
        "TEL_PORT",
        "TEL_PG_PORT",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_CONCURRENT_TASKS", "abc"),
        ("MAX_CONCURRENT_TASKS", "0"),
        ("MAX_CONCURRENT_TASKS", "-5"),
        ("EXECUTION_TIMEOUT", "soon"),
        ("LOG_LEVEL", "LOUD"),
        ("DATABASE_URL", "mysql://x/y"),
        ("DATABASE_URL", "sqlite:///taskexec.sqlite"),  # PostgreSQL is the only database
        ("CELERY_BROKER_URL", "kafka://x"),
        ("TEL_PORT", "70000"),
    ],
)
def test_bad_value_stops_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert name in str(exc.value)
    assert isinstance(exc.value, SystemExit)


def test_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_CONCURRENT_TASKS", "7")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@h/db")
    s = load_settings()
    assert s.max_concurrent_tasks == 7
    assert s.database_url == "postgresql+psycopg://u:p@h/db"
    assert s.execution_timeout_ms == 300_000 and s.default_timeout_s == 300.0
    assert s.executor_max_timeout_s == 3600 and s.jwt_issuer == "auth-service"
    assert s.queue_automated == "task-execution-automated"


def test_without_database_url_every_command_uses_the_local_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster scripts/services.sh starts for `make run` and `make test` (its TEL_PG_PORT knob too)."""
    assert load_settings().database_url == "postgresql+psycopg://postgres@127.0.0.1:55432/taskexec"
    monkeypatch.setenv("TEL_PG_PORT", "55433")
    assert load_settings().database_url == "postgresql+psycopg://postgres@127.0.0.1:55433/taskexec"


def test_short_jwt_secret_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        Settings(TEL_JWT_SECRET="short").require_jwt_secret()  # type: ignore[call-arg]
    assert "TEL_JWT_SECRET" in str(exc.value)


def test_redacted_hides_secrets_and_url_passwords() -> None:
    s = Settings(  # type: ignore[call-arg]
        TEL_JWT_SECRET="super-secret-jwt-value-0123456789abcdef",
        TEL_WEBHOOK_SECRET="hook-secret-value",
        DATABASE_URL="postgresql://tel:dbpass123@db:5432/tel",
        CELERY_BROKER_URL="amqp://guest:brokerpass@mq:5672//",
    )
    dump = s.redacted()
    text = json.dumps(dump, default=str)
    for secret in ("super-secret-jwt-value", "hook-secret-value", "dbpass123", "brokerpass"):
        assert secret not in text
    assert dump["jwt_secret"] == "***"
    assert dump["database_url"] == "postgresql+psycopg://tel:***@db:5432/tel"
    assert dump["broker_url"] == "amqp://guest:***@mq:5672//"
    assert dump["service_token"] is None
    assert dump["max_concurrent_tasks"] == 50


def test_mask_url() -> None:
    assert mask_url("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert mask_url("redis://host:6379/0") == "redis://host:6379/0"
