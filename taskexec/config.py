"""Settings from the environment: validated once at start-up, secrets redacted in dumps."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskexec.constants import DEFAULT_QUEUES, TaskType


class Settings(BaseSettings):
    """All configuration. Seed names are unprefixed; everything else is `TEL_*`."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=False)

    # --- seed names (contract section 2)
    database_url: str = Field("sqlite:///taskexec.sqlite", validation_alias="DATABASE_URL")
    workflow_orchestrator_url: str | None = Field(None, validation_alias="WORKFLOW_ORCHESTRATOR_URL")
    task_router_url: str = Field("http://127.0.0.1:8081", validation_alias="TASK_ROUTER_URL")
    max_concurrent_tasks: int = Field(50, ge=1, le=1000, validation_alias="MAX_CONCURRENT_TASKS")
    execution_timeout_ms: int = Field(300_000, ge=1000, validation_alias="EXECUTION_TIMEOUT")
    notification_service_url: str | None = Field(None, validation_alias="NOTIFICATION_SERVICE_URL")
    integration_service_url: str | None = Field(None, validation_alias="INTEGRATION_SERVICE_URL")
    secrets_manager_url: str | None = Field(None, validation_alias="SECRETS_MANAGER_URL")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    broker_url: str = Field("redis://localhost:6379/0", validation_alias="CELERY_BROKER_URL")

    # --- TEL_* names
    jwt_secret: SecretStr = Field(SecretStr(""), validation_alias="TEL_JWT_SECRET")
    jwt_issuer: str = Field("auth-service", validation_alias="TEL_JWT_ISSUER")
    jwt_public_key: str | None = Field(None, validation_alias="TEL_JWT_PUBLIC_KEY")
    service_token: SecretStr | None = Field(None, validation_alias="TEL_SERVICE_TOKEN")
    webhook_secret: SecretStr | None = Field(None, validation_alias="TEL_WEBHOOK_SECRET")
    secrets_token: SecretStr | None = Field(None, validation_alias="TEL_SECRETS_TOKEN")
    executor_max_timeout_s: int = Field(3600, ge=1, validation_alias="TEL_EXECUTOR_MAX_TIMEOUT")
    queue_automated: str = Field(DEFAULT_QUEUES["AUTOMATED"], validation_alias="TEL_QUEUE_AUTOMATED_NAME")
    queue_manual: str = Field(DEFAULT_QUEUES["MANUAL"], validation_alias="TEL_QUEUE_MANUAL_NAME")
    queue_integration: str = Field(DEFAULT_QUEUES["INTEGRATION"], validation_alias="TEL_QUEUE_INTEGRATION_NAME")
    queue_deadletter: str = Field(DEFAULT_QUEUES["DEADLETTER"], validation_alias="TEL_QUEUE_DEADLETTER_NAME")
    host: str = Field("0.0.0.0", validation_alias="TEL_HOST")
    port: int = Field(8081, ge=1, le=65535, validation_alias="TEL_PORT")
    router_workers: int = Field(2, ge=1, le=64, validation_alias="TEL_ROUTER_WORKERS")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, validation_alias="TEL_MAX_BODY_BYTES")
    # > 0: a router process remembers a verified API key this long; any change to api_keys (a revocation)
    # clears every router process's memory at once (taskexec.keywatch); 0: check the key on every request
    api_key_cache_s: float = Field(60.0, ge=0, le=3600, validation_alias="TEL_API_KEY_CACHE_SECONDS")
    visibility_margin_s: int = Field(300, ge=5, validation_alias="TEL_VISIBILITY_MARGIN")
    outbox_poll_s: float = Field(0.5, gt=0, validation_alias="TEL_OUTBOX_POLL_INTERVAL")
    outbox_max_backoff_s: float = Field(60.0, gt=0, validation_alias="TEL_OUTBOX_MAX_BACKOFF")
    outbox_thread: bool = Field(True, validation_alias="TEL_OUTBOX_THREAD")
    manual_concurrency: int = Field(4, ge=1, le=256, validation_alias="TEL_MANUAL_CONCURRENCY")
    integration_concurrency: int = Field(16, ge=1, le=256, validation_alias="TEL_INTEGRATION_CONCURRENCY")
    queued_timeout_s: int = Field(86400, ge=1, validation_alias="TEL_QUEUED_TIMEOUT")
    metrics_port: int = Field(9540, ge=0, le=65535, validation_alias="TEL_METRICS_PORT")  # worker HTTP; 0: none
    health_stale_s: float = Field(30.0, gt=0, validation_alias="TEL_HEALTH_STALE_SECONDS")  # worker /health
    stale_running_grace_s: float = Field(60.0, ge=0, validation_alias="TEL_STALE_RUNNING_GRACE")
    # --- manual tasks
    manual_max_open_tasks: int = Field(10, ge=1, le=10_000, validation_alias="TEL_MANUAL_MAX_OPEN_TASKS")
    manual_rebalance_s: float = Field(30.0, gt=0, validation_alias="TEL_MANUAL_REBALANCE_INTERVAL")
    manual_sweep_interval_s: float = Field(15.0, gt=0, validation_alias="TEL_MANUAL_SWEEP_INTERVAL")

    # --- backups (`taskexec db backup`)
    backup_dir: str = Field("backups", min_length=1, validation_alias="TEL_BACKUP_DIR")
    backup_retention_days: int = Field(30, ge=0, validation_alias="TEL_BACKUP_RETENTION_DAYS")

    # --- sandbox (automated pool)
    sandbox_image_python: str = Field("taskexec-sandbox-python:1", validation_alias="TEL_SANDBOX_IMAGE_PYTHON")
    sandbox_image_shell: str = Field("taskexec-sandbox-shell:1", validation_alias="TEL_SANDBOX_IMAGE_SHELL")
    sandbox_runtime: str | None = Field(None, validation_alias="TEL_SANDBOX_RUNTIME")
    sandbox_allow_network: bool = Field(False, validation_alias="TEL_SANDBOX_ALLOW_NETWORK")
    sandbox_pool_size: int = Field(2, ge=0, le=32, validation_alias="TEL_SANDBOX_POOL_SIZE")
    sandbox_default_cpu: float = Field(1.0, gt=0, validation_alias="TEL_SANDBOX_DEFAULT_CPU")
    sandbox_max_cpu: float = Field(2.0, gt=0, validation_alias="TEL_SANDBOX_MAX_CPU")
    sandbox_default_memory: str = Field("128Mi", validation_alias="TEL_SANDBOX_DEFAULT_MEMORY")
    sandbox_max_memory: str = Field("2Gi", validation_alias="TEL_SANDBOX_MAX_MEMORY")
    sandbox_pids: int = Field(64, ge=8, validation_alias="TEL_SANDBOX_PIDS")
    sandbox_output_bytes: int = Field(1024 * 1024, ge=1024, validation_alias="TEL_SANDBOX_OUTPUT_BYTES")
    sandbox_tmp_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024, validation_alias="TEL_SANDBOX_TMP_BYTES")
    sandbox_log_tail_bytes: int = Field(64 * 1024, ge=1024, validation_alias="TEL_SANDBOX_LOG_TAIL_BYTES")

    # --- integration pool (docs/integration-tasks.md)
    redis_url: str | None = Field(None, validation_alias="TEL_REDIS_URL")  # breaker/rate state; default: broker
    integration_key_prefix: str = Field("tel:integration", min_length=1, validation_alias="TEL_INTEGRATION_KEY_PREFIX")
    integration_connect_timeout_ms: int = Field(5000, gt=0, validation_alias="TEL_INTEGRATION_CONNECT_TIMEOUT_MS")
    integration_read_timeout_ms: int = Field(30000, gt=0, validation_alias="TEL_INTEGRATION_READ_TIMEOUT_MS")
    integration_max_response_bytes: int = Field(10 * 1024 * 1024, ge=1024,
                                                validation_alias="TEL_INTEGRATION_MAX_RESPONSE_BYTES")
    circuit_failure_threshold: int = Field(5, ge=1, validation_alias="TEL_CIRCUIT_FAILURE_THRESHOLD")
    circuit_open_s: float = Field(30.0, gt=0, validation_alias="TEL_CIRCUIT_OPEN_SECONDS")
    rate_limit_default: str = Field("100/min", validation_alias="TEL_RATE_LIMIT_DEFAULT")
    rate_limit_hosts: str = Field("", validation_alias="TEL_RATE_LIMIT_HOSTS")  # host[:port]=60/min,...
    rate_limit_burst: int = Field(1, ge=1, validation_alias="TEL_RATE_LIMIT_BURST")
    rate_limit_max_wait_s: float = Field(2.0, ge=0, validation_alias="TEL_RATE_LIMIT_MAX_WAIT")
    secrets_kv_mount: str = Field("secret", min_length=1, validation_alias="TEL_SECRETS_KV_MOUNT")

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value

    @field_validator("database_url")
    @classmethod
    def _db(cls, value: str) -> str:
        if value.startswith("postgres://"):
            value = "postgresql://" + value[len("postgres://") :]
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value[len("postgresql://") :]
        if not value.startswith(("postgresql+psycopg://", "sqlite:")):
            raise ValueError("must be a postgresql:// or sqlite:/// URL")
        return value

    @field_validator("rate_limit_default")
    @classmethod
    def _rate(cls, value: str) -> str:
        from taskexec.integration_spec import parse_rate

        parse_rate(value)
        return value

    @field_validator("rate_limit_hosts")
    @classmethod
    def _rate_hosts(cls, value: str) -> str:
        from taskexec.integration_spec import parse_rate_overrides

        parse_rate_overrides(value)
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://", "memory://")):
            raise ValueError("must be a redis:// or amqp:// URL")
        return value

    def require_jwt_secret(self) -> None:
        """Processes that sign or verify tokens refuse to start without a real secret."""
        if not self.jwt_public_key and len(self.jwt_secret.get_secret_value()) < 32:
            raise ConfigError("invalid configuration:\n  TEL_JWT_SECRET: must be set (at least 32 characters)")

    @property
    def queues(self) -> dict[TaskType, str]:
        return {
            TaskType.AUTOMATED: self.queue_automated,
            TaskType.MANUAL: self.queue_manual,
            TaskType.INTEGRATION: self.queue_integration,
        }

    @property
    def default_timeout_s(self) -> float:
        return self.execution_timeout_ms / 1000.0

    @property
    def visibility_timeout_s(self) -> int:
        """Above the longest allowed task, so a running task's message is never redelivered early."""
        return self.executor_max_timeout_s + self.visibility_margin_s

    def redacted(self) -> dict[str, Any]:
        """A dump safe to print: secrets and URL passwords masked."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                out[name] = "***" if value.get_secret_value() else None
            elif isinstance(value, str) and "://" in value and "@" in value:
                out[name] = mask_url(value)
            else:
                out[name] = value
        return out


def mask_url(url: str) -> str:
    """Hide the password (or token) part of a URL's userinfo."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.partition("@")
    if not at:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


class ConfigError(SystemExit):
    """Raised at start-up when a variable is invalid; the message names the variable."""


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "?"
            lines.append(f"  {name}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings() -> None:
    get_settings.cache_clear()
