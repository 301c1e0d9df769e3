"""Platform secrets out of the environment: `<NAME>_FILE` files and Vault KV v2 at start-up; JWT rotation.

`VaultStub` (tests/http_target.py) is a real HTTP server on 127.0.0.1 speaking Vault's KV v2 read API,
a stand-in because we cannot run Vault here. `taskexec config` runs as a real process.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from taskexec.core.config import ConfigError, Settings, load_settings
from taskexec.core.exceptions import Unauthorized
from taskexec.core.secret_sources import FILE_SUFFIX, SECRET_SETTINGS
from taskexec.store.auth import decode_token, issue_token, previous_secret_valid
from tests.http_target import VaultStub
from tests.support import ROOT, taskexec

OLD = "old-secret-0123456789abcdef-0123456789"
NEW = "new-secret-0123456789abcdef-0123456789"
VAULT_TOKEN = "vault-token-for-tests"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*SECRET_SETTINGS, "TEL_VAULT_TOKEN", "TEL_VAULT_ADDR", "TEL_VAULT_PATH", "TEL_VAULT_KV_MOUNT",
                 "TEL_JWT_SECRET_PREVIOUS_UNTIL"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name + FILE_SUFFIX, raising=False)


@pytest.fixture
def vault() -> Iterator[VaultStub]:
    stub = VaultStub(VAULT_TOKEN, {"taskexec/router": {
        "TEL_JWT_SECRET": "vault-jwt-secret-0123456789abcdef-012",
        "TEL_SERVICE_TOKEN": "tel_vault-service-token",
        "TEL_DATABASE_PASSWORD": "vault db pass",
        "unrelated": "ignored",
    }})
    yield stub
    stub.close()


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n")  # as `kubectl create secret --from-file` and editors leave it
    return str(path)


def test_each_secret_setting_reads_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "TEL_JWT_SECRET": "file-jwt-secret-0123456789abcdef-0123",
        "TEL_SERVICE_TOKEN": "tel_file-service-token",
        "TEL_WEBHOOK_SECRET": "file-webhook-secret",
        "TEL_SECRETS_TOKEN": "file-secrets-token",
        "CELERY_BROKER_URL": "redis://:brokerpw@redis:6379/0",
        "TEL_REDIS_URL": "redis://:statepw@redis:6379/1",
    }
    for name, value in values.items():
        monkeypatch.setenv(name + FILE_SUFFIX, secret_file(tmp_path, name.lower(), value))
    monkeypatch.setenv("DATABASE_URL", "postgresql://tasks@db:5432/tasks?sslmode=verify-full")
    monkeypatch.setenv("TEL_DATABASE_PASSWORD_FILE", secret_file(tmp_path, "dbpass", "p@ss/w:rd"))
    s = load_settings()
    assert s.jwt_secret.get_secret_value() == values["TEL_JWT_SECRET"]
    assert s.service_token and s.service_token.get_secret_value() == values["TEL_SERVICE_TOKEN"]
    assert s.webhook_secret and s.webhook_secret.get_secret_value() == values["TEL_WEBHOOK_SECRET"]
    assert s.secrets_token and s.secrets_token.get_secret_value() == values["TEL_SECRETS_TOKEN"]
    assert s.broker_url == values["CELERY_BROKER_URL"] and s.redis_url == values["TEL_REDIS_URL"]
    # the password goes into the URL, percent-encoded; the URL's query (TLS settings) stays
    assert s.database_url == "postgresql+psycopg://tasks:p%40ss%2Fw%3Ard@db:5432/tasks?sslmode=verify-full"


def test_a_whole_database_url_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL_FILE", secret_file(tmp_path, "url", "postgresql://u:pw@h/d"))
    assert load_settings().database_url == "postgresql+psycopg://u:pw@h/d"


def test_broker_password_and_empty_optional_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://taskexec@rabbitmq:5672//")
    monkeypatch.setenv("TEL_BROKER_PASSWORD_FILE", secret_file(tmp_path, "mq", "rabbit pw"))
    monkeypatch.setenv("TEL_WEBHOOK_SECRET_FILE", secret_file(tmp_path, "hook", ""))  # empty: not set
    s = load_settings()
    assert s.broker_url == "amqp://taskexec:rabbit%20pw@rabbitmq:5672//" and s.webhook_secret is None
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://redis:6379/0")  # Redis: a password without a user
    assert load_settings().broker_url == "redis://:rabbit%20pw@redis:6379/0"
    monkeypatch.setenv("TEL_JWT_SECRET_FILE", secret_file(tmp_path, "jwt", ""))
    with pytest.raises(ConfigError, match="TEL_JWT_SECRET: must be set"):
        load_settings().require_jwt_secret()


@pytest.mark.parametrize(("setup", "message"), [
    ("both", "set both TEL_JWT_SECRET and TEL_JWT_SECRET_FILE"),
    ("missing", "TEL_JWT_SECRET_FILE: no such file"),
])
def test_bad_secret_files_stop_naming_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   setup: str, message: str) -> None:
    path = tmp_path / "jwt"
    if setup == "both":
        path.write_text(NEW)
        monkeypatch.setenv("TEL_JWT_SECRET", OLD)
    monkeypatch.setenv("TEL_JWT_SECRET_FILE", str(path))
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert message in str(exc.value)
    assert OLD not in str(exc.value) and NEW not in str(exc.value)


def test_secrets_from_vault_at_start_up(vault: VaultStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEL_VAULT_ADDR", vault.url)
    monkeypatch.setenv("TEL_VAULT_PATH", "taskexec/router")
    monkeypatch.setenv("TEL_VAULT_TOKEN_FILE", secret_file(tmp_path, "vault-token", VAULT_TOKEN))
    monkeypatch.setenv("DATABASE_URL", "postgresql://tasks@db/tasks")
    monkeypatch.setenv("TEL_SERVICE_TOKEN", "tel_from-env-wins")  # a variable beats Vault
    s = load_settings()
    assert s.jwt_secret.get_secret_value() == "vault-jwt-secret-0123456789abcdef-012"
    assert s.service_token and s.service_token.get_secret_value() == "tel_from-env-wins"
    assert s.database_url == "postgresql+psycopg://tasks:vault%20db%20pass@db/tasks"
    assert vault.reads == ["taskexec/router"]


@pytest.mark.parametrize(("change", "message"), [
    ({"TEL_VAULT_TOKEN": "wrong"}, "TEL_VAULT_TOKEN: Vault refused access"),
    ({"TEL_VAULT_PATH": "taskexec/nothing"}, "TEL_VAULT_PATH: no secret 'taskexec/nothing'"),
    ({"TEL_VAULT_PATH": ""}, "TEL_VAULT_PATH: required with TEL_VAULT_ADDR"),
])
def test_vault_failures_stop_the_process_naming_the_variable(vault: VaultStub, monkeypatch: pytest.MonkeyPatch,
                                                             change: dict[str, str], message: str) -> None:
    env = {"TEL_VAULT_ADDR": vault.url, "TEL_VAULT_PATH": "taskexec/router", "TEL_VAULT_TOKEN": VAULT_TOKEN}
    for name, value in {**env, **change}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert message in str(exc.value)


def test_taskexec_config_never_shows_a_secret_value(vault: VaultStub, tmp_path: Path) -> None:
    values = {"TEL_JWT_SECRET": NEW, "TEL_JWT_SECRET_PREVIOUS": OLD, "TEL_WEBHOOK_SECRET": "hook-value-xyz",
              "TEL_SECRETS_TOKEN": "secrets-token-xyz", "CELERY_BROKER_URL": "amqp://mq:brokerpw-xyz@mq:5672//"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEL_", "DATABASE_URL"))}
    env.update({name + FILE_SUFFIX: secret_file(tmp_path, name.lower(), v) for name, v in values.items()})
    env.update({"TEL_VAULT_ADDR": vault.url, "TEL_VAULT_PATH": "taskexec/router", "TEL_VAULT_TOKEN": VAULT_TOKEN,
                "TEL_JWT_SECRET_PREVIOUS_UNTIL": "2030-01-01T00:00:00Z",
                "DATABASE_URL": "postgresql://tasks@db/tasks?sslmode=verify-full&sslpassword=keypass-xyz"})
    out = subprocess.run(taskexec("config"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    dump = json.loads(out.stdout)
    for secret in [*values.values(), "brokerpw-xyz", "vault db pass", "vault%20db%20pass", "tel_vault-service-token",
                   VAULT_TOKEN, "keypass-xyz"]:
        assert secret not in out.stdout, secret
    assert dump["jwt_secret"] == dump["jwt_secret_previous"] == dump["service_token"] == "***"
    assert dump["database_url"] == "postgresql+psycopg://tasks:***@db/tasks?sslmode=verify-full&sslpassword=***"
    assert dump["broker_url"] == "amqp://mq:***@mq:5672//" and dump["vault_token"] == "***"


# ---------------------------------------------------------------- JWT secret rotation


def rotated(until: datetime) -> Settings:
    return Settings(TEL_JWT_SECRET=NEW, TEL_JWT_SECRET_PREVIOUS=OLD,  # type: ignore[call-arg]
                    TEL_JWT_SECRET_PREVIOUS_UNTIL=until.isoformat())


def test_rotation_accepts_tokens_of_the_previous_secret_until_the_expiry() -> None:
    before = Settings(TEL_JWT_SECRET=OLD)  # type: ignore[call-arg]
    old_token = issue_token(before, "alice", ["admin"])
    during = rotated(datetime.now(UTC) + timedelta(hours=1))
    assert decode_token(during, old_token).sub == "alice"  # issued before the switch: still good
    new_token = issue_token(during, "bob", ["admin"])  # new tokens are signed with the new secret
    assert jwt.get_unverified_header(new_token)["alg"] == "HS256"
    assert jwt.decode(new_token, NEW, algorithms=["HS256"], issuer="auth-service")["sub"] == "bob"
    assert decode_token(during, new_token).sub == "bob"
    after = rotated(datetime.now(UTC) - timedelta(seconds=1))
    assert not previous_secret_valid(after)
    with pytest.raises(Unauthorized, match="Signature verification failed"):
        decode_token(after, old_token)
    assert decode_token(after, new_token).sub == "bob"
    # the grace period is not a back door: other secrets, expired tokens stay refused
    foreign = jwt.encode({"sub": "eve", "iss": "auth-service", "exp": int(time.time()) + 60},
                         "foreign-secret-0123456789abcdef-01234", algorithm="HS256")
    with pytest.raises(Unauthorized):
        decode_token(during, foreign)
    expired = jwt.encode({"sub": "alice", "iss": "auth-service", "exp": int(time.time()) - 5}, OLD, algorithm="HS256")
    with pytest.raises(Unauthorized, match="expired"):
        decode_token(during, expired)


def test_a_previous_secret_needs_an_expiry_and_32_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEL_JWT_SECRET", NEW)
    monkeypatch.setenv("TEL_JWT_SECRET_PREVIOUS", OLD)
    with pytest.raises(ConfigError, match="TEL_JWT_SECRET_PREVIOUS_UNTIL: required"):
        load_settings()
    monkeypatch.setenv("TEL_JWT_SECRET_PREVIOUS_UNTIL", "2030-01-01T00:00:00")
    assert previous_secret_valid(load_settings(), now=datetime(2029, 12, 31, 23, 0, tzinfo=UTC))  # naive: UTC
    monkeypatch.setenv("TEL_JWT_SECRET_PREVIOUS", "short")
    with pytest.raises(ConfigError, match="TEL_JWT_SECRET_PREVIOUS: at least 32"):
        load_settings().require_jwt_secret()
