"""Settings from the environment: validated once at start-up, secrets redacted in dumps."""

from __future__ import annotations

import functools
import os
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from taskexec.core.constants import DEADLETTER, DEFAULT_QUEUES, TaskType
from taskexec.core.secret_sources import SecretFilesSource, SecretSourceError, VaultSource

# The PostgreSQL that scripts/services.sh starts for `make run` and `make test` (port: its TEL_PG_PORT knob);
# every command uses it unless DATABASE_URL says otherwise, and `taskexec up` creates the database.
LOCAL_DATABASE_NAME = "taskexec"


def local_database_url() -> str:
    port = os.environ.get("TEL_PG_PORT") or "55432"
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{LOCAL_DATABASE_NAME}"

RATE_OFF = ("off", "0", "none", "")  # values of TEL_API_RATE_LIMIT / TEL_API_BULK_RATE_LIMIT meaning no limit


class Settings(BaseSettings):
    """All configuration. Seed names are unprefixed; everything else is `TEL_*`."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=False)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Secret settings also come from `<NAME>_FILE` and from Vault (taskexec/core/secret_sources.py)."""
        return (init_settings, env_settings, SecretFilesSource(settings_cls), VaultSource(settings_cls),
                dotenv_settings, file_secret_settings)

    # --- seed names (unprefixed: the deployment documents them; README "Configuration")
    database_url: str = Field(default_factory=local_database_url, validation_alias="DATABASE_URL")
    workflow_orchestrator_url: str | None = Field(None, validation_alias="WORKFLOW_ORCHESTRATOR_URL")
    task_router_url: str = Field("http://127.0.0.1:8081", validation_alias="TASK_ROUTER_URL")
    max_concurrent_tasks: int = Field(50, ge=1, le=1000, validation_alias="MAX_CONCURRENT_TASKS")
    execution_timeout_ms: int = Field(300_000, ge=1000, validation_alias="EXECUTION_TIMEOUT")
    notification_service_url: str | None = Field(None, validation_alias="NOTIFICATION_SERVICE_URL")
    integration_service_url: str | None = Field(None, validation_alias="INTEGRATION_SERVICE_URL")
    secrets_manager_url: str | None = Field(None, validation_alias="SECRETS_MANAGER_URL")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    broker_url: str = Field("redis://localhost:6379/0", validation_alias="CELERY_BROKER_URL")
    # The broker password alone (or TEL_BROKER_PASSWORD_FILE): put into CELERY_BROKER_URL.
    broker_password: SecretStr | None = Field(None, validation_alias="TEL_BROKER_PASSWORD")

    # --- TEL_* names
    jwt_secret: SecretStr = Field(SecretStr(""), validation_alias="TEL_JWT_SECRET")
    # Rotation without downtime: tokens signed with the previous secret are accepted until the given time.
    jwt_secret_previous: SecretStr | None = Field(None, validation_alias="TEL_JWT_SECRET_PREVIOUS")
    jwt_secret_previous_until: datetime | None = Field(None, validation_alias="TEL_JWT_SECRET_PREVIOUS_UNTIL")
    # The database password alone (or TEL_DATABASE_PASSWORD_FILE): put into DATABASE_URL, which then holds none.
    database_password: SecretStr | None = Field(None, validation_alias="TEL_DATABASE_PASSWORD")
    # Vault KV v2 as the source of the secret settings at start-up (taskexec/core/secret_sources.py).
    vault_addr: str | None = Field(None, validation_alias="TEL_VAULT_ADDR")
    vault_path: str | None = Field(None, validation_alias="TEL_VAULT_PATH")
    vault_kv_mount: str = Field("secret", min_length=1, validation_alias="TEL_VAULT_KV_MOUNT")
    vault_token: SecretStr | None = Field(None, validation_alias="TEL_VAULT_TOKEN")
    # The router serves HTTPS itself when both are set (TLS 1.2 at least).
    tls_cert_file: str | None = Field(None, validation_alias="TEL_TLS_CERT_FILE")
    tls_key_file: str | None = Field(None, validation_alias="TEL_TLS_KEY_FILE")
    # AUTOMATED tasks go to this SQS queue (the serverless executor, serverless/) instead of the broker.
    sqs_queue_url: str | None = Field(None, validation_alias="TEL_SQS_QUEUE_URL")
    jwt_issuer: str = Field("auth-service", validation_alias="TEL_JWT_ISSUER")
    jwt_public_key: str | None = Field(None, validation_alias="TEL_JWT_PUBLIC_KEY")
    service_token: SecretStr | None = Field(None, validation_alias="TEL_SERVICE_TOKEN")
    # the serverless executor's service token in AWS Secrets Manager (a Lambda function has no secret files)
    service_token_secret_arn: str | None = Field(None, validation_alias="TEL_SERVICE_TOKEN_SECRET_ARN")
    # local state of one host: `taskexec up`'s generated secrets, the beat's schedule file (relative: to the cwd)
    state_dir: str = Field(".taskexec", min_length=1, validation_alias="TEL_STATE_DIR")
    # the port of the local Redis scripts/services.sh starts, `taskexec up`'s default broker
    redis_port: int = Field(6379, ge=1, le=65535, validation_alias="TEL_REDIS_PORT")
    webhook_secret: SecretStr | None = Field(None, validation_alias="TEL_WEBHOOK_SECRET")
    secrets_token: SecretStr | None = Field(None, validation_alias="TEL_SECRETS_TOKEN")
    executor_max_timeout_s: int = Field(3600, ge=1, validation_alias="TEL_EXECUTOR_MAX_TIMEOUT")
    queue_automated: str = Field(DEFAULT_QUEUES[TaskType.AUTOMATED], validation_alias="TEL_QUEUE_AUTOMATED_NAME")
    queue_manual: str = Field(DEFAULT_QUEUES[TaskType.MANUAL], validation_alias="TEL_QUEUE_MANUAL_NAME")
    queue_integration: str = Field(DEFAULT_QUEUES[TaskType.INTEGRATION], validation_alias="TEL_QUEUE_INTEGRATION_NAME")
    queue_deadletter: str = Field(DEFAULT_QUEUES[DEADLETTER.upper()], validation_alias="TEL_QUEUE_DEADLETTER_NAME")
    host: str = Field("0.0.0.0", validation_alias="TEL_HOST")
    port: int = Field(8081, ge=1, le=65535, validation_alias="TEL_PORT")
    router_workers: int = Field(2, ge=1, le=64, validation_alias="TEL_ROUTER_WORKERS")
    # gunicorn's threads per router process (its --threads): requests in progress at once, most waiting on
    # PostgreSQL or the broker
    router_threads: int = Field(8, ge=1, le=256, validation_alias="TEL_ROUTER_THREADS")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, validation_alias="TEL_MAX_BODY_BYTES")
    # > 0: a router process remembers a verified API key this long; any change to api_keys (a revocation)
    # clears every router process's memory at once (taskexec.store.keywatch); 0: check the key on every request
    api_key_cache_s: float = Field(60.0, ge=0, le=3600, validation_alias="TEL_API_KEY_CACHE_SECONDS")
    visibility_margin_s: int = Field(300, ge=5, validation_alias="TEL_VISIBILITY_MARGIN")
    outbox_poll_s: float = Field(0.5, gt=0, validation_alias="TEL_OUTBOX_POLL_INTERVAL")
    outbox_max_backoff_s: float = Field(60.0, gt=0, validation_alias="TEL_OUTBOX_MAX_BACKOFF")
    outbox_thread: bool = Field(True, validation_alias="TEL_OUTBOX_THREAD")
    # a task's callbackUrl (a user's receiver) is retried this long, then its event is given up (logged,
    # counted as `abandoned`); the orchestrator's events and notifications are retried for good
    callback_max_age_s: int = Field(86400, ge=60, validation_alias="TEL_CALLBACK_MAX_AGE")
    manual_concurrency: int = Field(4, ge=1, le=256, validation_alias="TEL_MANUAL_CONCURRENCY")
    # integration calls mostly wait on the network: 64 threads keep 2 cores busy (8 left them idle; bench/README.md)
    integration_concurrency: int = Field(64, ge=1, le=256, validation_alias="TEL_INTEGRATION_CONCURRENCY")
    queued_timeout_s: int = Field(86400, ge=1, validation_alias="TEL_QUEUED_TIMEOUT")
    flower_port: int = Field(5555, ge=0, le=65535, validation_alias="TEL_FLOWER_PORT")  # `taskexec up`; 0: none
    metrics_port: int = Field(9540, ge=0, le=65535, validation_alias="TEL_METRICS_PORT")  # worker HTTP; 0: none
    health_stale_s: float = Field(30.0, gt=0, validation_alias="TEL_HEALTH_STALE_SECONDS")  # worker /health
    # worker /health and /ready: 503 once its queue has waited this long with a free slot and nothing taken
    health_stall_s: float = Field(60.0, gt=0, validation_alias="TEL_HEALTH_STALL_SECONDS")
    stale_running_grace_s: float = Field(60.0, ge=0, validation_alias="TEL_STALE_RUNNING_GRACE")
    # --- API rate limits and load shedding (docs/architecture.md, "Rate limits and shedding")
    api_rate_limit: str = Field("100/min", validation_alias="TEL_API_RATE_LIMIT")  # per principal; "off": none
    api_bulk_rate_limit: str = Field("20/min", validation_alias="TEL_API_BULK_RATE_LIMIT")  # routes marked @bulk
    api_rate_limit_exempt_roles: str = Field("admin,service", validation_alias="TEL_API_RATE_LIMIT_EXEMPT_ROLES")
    shed_low_queue_depth: int = Field(10_000, ge=0, validation_alias="TEL_SHED_LOW_QUEUE_DEPTH")  # 0: never
    shed_medium_queue_depth: int = Field(50_000, ge=0, validation_alias="TEL_SHED_MEDIUM_QUEUE_DEPTH")  # 0: never
    shed_retry_after_s: int = Field(30, ge=1, le=3600, validation_alias="TEL_SHED_RETRY_AFTER")
    shed_check_interval_s: float = Field(2.0, gt=0, le=300, validation_alias="TEL_SHED_CHECK_INTERVAL")
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
    # tasks with outbound access: their Docker network, who installs its firewall rules (sandbox/egress.py),
    # and the private ranges they may reach all the same (comma-separated CIDRs)
    sandbox_network: str = Field("taskexec-egress", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
                                 validation_alias="TEL_SANDBOX_NETWORK")
    sandbox_egress_rules: str = Field("install", pattern=r"^(install|external)$",
                                      validation_alias="TEL_SANDBOX_EGRESS_RULES")
    sandbox_allowed_networks: str = Field("", validation_alias="TEL_SANDBOX_ALLOWED_NETWORKS")
    sandbox_pool_size: int = Field(2, ge=0, le=32, validation_alias="TEL_SANDBOX_POOL_SIZE")
    # the Debian release and mirror `taskexec sandbox build-image` debootstraps the runtime images from
    sandbox_suite: str = Field("bookworm", pattern=r"^[a-z][a-z0-9-]*$", validation_alias="TEL_SANDBOX_SUITE")
    sandbox_mirror: str = Field("http://deb.debian.org/debian", min_length=1, validation_alias="TEL_SANDBOX_MIRROR")
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
    # no Redis for that state: true keeps it per process; false (default) and the integration pool refuses to start
    integration_local_state: bool = Field(False, validation_alias="TEL_INTEGRATION_LOCAL_STATE")
    integration_key_prefix: str = Field("tel:integration", min_length=1, validation_alias="TEL_INTEGRATION_KEY_PREFIX")
    integration_connect_timeout_ms: int = Field(5000, gt=0, validation_alias="TEL_INTEGRATION_CONNECT_TIMEOUT_MS")
    integration_read_timeout_ms: int = Field(30000, gt=0, validation_alias="TEL_INTEGRATION_READ_TIMEOUT_MS")
    # definition-controlled URLs reach public addresses only, plus these ranges (comma-separated CIDRs)
    integration_allowed_networks: str = Field("", validation_alias="TEL_INTEGRATION_ALLOWED_NETWORKS")
    # the router's POSTs to a task's callbackUrl (user-supplied) go to public addresses only, plus these ranges
    callback_allowed_networks: str = Field("", validation_alias="TEL_CALLBACK_ALLOWED_NETWORKS")
    integration_max_redirects: int = Field(5, ge=0, le=20, validation_alias="TEL_INTEGRATION_MAX_REDIRECTS")
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
        if not value.startswith("postgresql+psycopg://"):
            raise ValueError("must be a postgresql:// URL (PostgreSQL is the only database)")
        return value

    @field_validator("rate_limit_default")
    @classmethod
    def _rate(cls, value: str) -> str:
        from taskexec.core.integration_spec import parse_rate

        parse_rate(value)
        return value

    @field_validator("api_rate_limit", "api_bulk_rate_limit")
    @classmethod
    def _api_rate(cls, value: str) -> str:
        from taskexec.core.integration_spec import parse_rate

        if value.strip().lower() not in RATE_OFF:
            parse_rate(value)
        return value.strip()

    @field_validator("integration_allowed_networks", "sandbox_allowed_networks", "callback_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        from taskexec.core.netpolicy import parse_networks

        parse_networks(value)
        return value

    @field_validator("rate_limit_hosts")
    @classmethod
    def _rate_hosts(cls, value: str) -> str:
        from taskexec.core.integration_spec import parse_rate_overrides

        parse_rate_overrides(value)
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        if value.startswith("sqs://"):
            raise ValueError("Celery's broker must be Redis or RabbitMQ; to run AUTOMATED tasks on AWS Lambda "
                             "from an SQS queue, set TEL_SQS_QUEUE_URL (docs/serverless.md)")
        if not value.startswith(("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://", "memory://")):
            raise ValueError("must be a redis:// or amqp:// URL")
        return value

    @field_validator("sqs_queue_url")
    @classmethod
    def _sqs(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be the queue's URL (https://sqs.<region>.amazonaws.com/<account>/<name>)")
        return value or None

    @model_validator(mode="after")
    def _combine(self) -> Settings:
        if self.database_password is not None and self.database_url.startswith("postgresql"):
            self.database_url = with_password(self.database_url, self.database_password.get_secret_value(),
                                              "TEL_DATABASE_PASSWORD")
        if self.broker_password is not None:
            self.broker_url = with_password(self.broker_url, self.broker_password.get_secret_value(), None)
        if self.jwt_secret_previous is not None and self.jwt_secret_previous_until is None:
            raise ValueError("TEL_JWT_SECRET_PREVIOUS_UNTIL: required with TEL_JWT_SECRET_PREVIOUS (when the "
                             "previous secret stops being accepted, e.g. 2026-03-01T12:00:00Z)")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("TEL_TLS_CERT_FILE and TEL_TLS_KEY_FILE: set both or neither")
        return self

    @field_validator("shed_medium_queue_depth")
    @classmethod
    def _shedding(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("shed_low_queue_depth") or 0
        if low and value and value < low:
            raise ValueError(f"must not be below TEL_SHED_LOW_QUEUE_DEPTH ({low})")
        return value

    def require_jwt_secret(self) -> None:
        """Processes that sign or verify tokens refuse to start without a real secret."""
        if not self.jwt_public_key and len(self.jwt_secret.get_secret_value()) < 32:
            raise ConfigError("invalid configuration:\n  TEL_JWT_SECRET: must be set (at least 32 characters)")
        previous = self.jwt_secret_previous.get_secret_value() if self.jwt_secret_previous else None
        if previous is not None and len(previous) < 32:
            raise ConfigError("invalid configuration:\n  TEL_JWT_SECRET_PREVIOUS: at least 32 characters")

    @property
    def queues(self) -> dict[TaskType, str]:
        return {
            TaskType.AUTOMATED: self.queue_automated,
            TaskType.MANUAL: self.queue_manual,
            TaskType.INTEGRATION: self.queue_integration,
        }

    @property
    def state_redis_url(self) -> str | None:
        """The Redis holding state shared by every process (integration breakers and rate limits, API rate
        limits): `TEL_REDIS_URL`, else the broker when it is Redis; None with an AMQP broker and no Redis."""
        if self.redis_url:
            return self.redis_url
        return self.broker_url if self.broker_url.startswith(("redis://", "rediss://")) else None

    def api_rate(self, bulk: bool = False) -> tuple[int, float] | None:
        """(requests, window seconds) of the standard or bulk API class; None when switched off."""
        from taskexec.core.integration_spec import parse_rate

        spec = self.api_bulk_rate_limit if bulk else self.api_rate_limit
        return None if spec.lower() in RATE_OFF else parse_rate(spec)

    @property
    def callback_allowed(self) -> tuple[Any, ...]:
        """TEL_CALLBACK_ALLOWED_NETWORKS parsed (ipaddress networks)."""
        from taskexec.core.netpolicy import parse_networks

        return parse_networks(self.callback_allowed_networks)

    @property
    def integration_allowed(self) -> tuple[Any, ...]:
        """TEL_INTEGRATION_ALLOWED_NETWORKS parsed (ipaddress networks)."""
        from taskexec.core.netpolicy import parse_networks

        return parse_networks(self.integration_allowed_networks)

    @property
    def rate_limit_exempt_roles(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.api_rate_limit_exempt_roles.split(",") if r.strip())

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
            elif isinstance(value, str) and "://" in value:
                out[name] = mask_url(value)
            else:
                out[name] = value
        return out


# Query parameters that carry a credential (libpq's `password`, `sslpassword`; tokens in some URLs).
_SECRET_QUERY = {"password", "sslpassword", "token", "secret"}


class ClientSettings(BaseSettings):
    """What the Python client and the user commands (`taskexec submit|get|...`) read; nothing else is needed."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=False)

    api_url: str = Field("http://127.0.0.1:8081", min_length=1, validation_alias="TEL_API_URL")
    api_token: SecretStr | None = Field(None, validation_alias="TEL_API_TOKEN")  # a JWT or an API key


def mask_url(url: str) -> str:
    """Hide the password (or token) part of a URL's userinfo, and credential query parameters."""
    scheme, sep, rest = url.partition("://")
    rest, qmark, query = rest.partition("?")
    userinfo, at, host = rest.rpartition("@")
    if at:
        user = userinfo.split(":", 1)[0]
        rest = f"{user}:***@{host}"
    if qmark:
        pairs = [(k, "***" if k.lower() in _SECRET_QUERY else v) for k, v in parse_qsl(query, keep_blank_values=True)]
        query = urlencode(pairs, safe="*/:")
    return f"{scheme}{sep}{rest}{qmark}{query}"


def with_password(url: str, password: str, need_user: str | None) -> str:
    """`url` with its userinfo password replaced by `password` (percent-encoded). With `need_user` (the
    variable's name) the URL must name a user (PostgreSQL); without, `redis://:pw@host` is fine."""
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at and need_user:
        raise ValueError(f"{need_user}: the URL names no user (scheme://<user>@host/...)")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:{quote(password, safe='')}@{host}{slash}{tail}"


class ConfigError(SystemExit):
    """Raised at start-up when a variable is invalid; the message names the variable."""


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except SecretSourceError as exc:
        raise ConfigError(str(exc)) from None
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {name}: {msg}" if name else f"  {msg}")  # a model check names its variables
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


def load_client_settings(**overrides: Any) -> ClientSettings:
    """TEL_API_URL and TEL_API_TOKEN only: a client does not need (or validate) the server's configuration."""
    return ClientSettings(**overrides)


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings() -> None:
    get_settings.cache_clear()
