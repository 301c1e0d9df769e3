"""Pydantic models of the public API: they validate requests and generate /openapi.json."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic.alias_generators import to_camel

from taskexec.core.constants import Priority, Runtime, Status, TaskType
from taskexec.core.limits import parse_cpu, parse_memory
from taskexec.core.semver import PATTERN as SEMVER

_DATE_TIME_START = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]")
SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class LooseModel(ApiModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


# ---------------------------------------------------------------- definitions


class RetryPolicy(ApiModel):
    max_retries: int = Field(3, ge=0, le=100)
    retry_interval: int = Field(1000, ge=0, description="ms before the first retry")
    backoff_multiplier: float = Field(2.0, ge=1.0, le=10.0)
    max_retry_interval: int | None = Field(None, ge=0)
    retryable_errors: list[str] | None = None


class ResourceRequirements(ApiModel):
    cpu: str | float | None = None
    memory: str | int | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: str | float | None) -> str | float | None:
        if v is not None:
            parse_cpu(v)
        return v

    @field_validator("memory")
    @classmethod
    def _mem(cls, v: str | int | None) -> str | int | None:
        if v is not None and parse_memory(v) < 8 * 1024 * 1024:
            raise ValueError("memory must be at least 8Mi")
        return v


class NetworkConfig(ApiModel):
    outbound_access: StrictBool = False  # JSON true/false only: 0, 1 or "yes" are refused, not read as a bool


def queued_timeout_field() -> Any:
    """`queuedTimeoutSeconds`, in every type's executionConfig: how long a task may wait in its queue for a
    worker before it ends TIMED_OUT with QUEUE_TIMEOUT (default TEL_QUEUED_TIMEOUT)."""
    return Field(None, ge=1, le=30 * 86400,
                 description="seconds a task may stay PENDING before it ends TIMED_OUT (QUEUE_TIMEOUT)")


class AutomatedConfig(ApiModel):
    runtime: Runtime
    code: str = Field(min_length=1, max_length=512 * 1024)
    resource_requirements: ResourceRequirements | None = None
    environment_variables: dict[str, str] | None = None
    network: NetworkConfig | None = None
    queued_timeout_seconds: int | None = queued_timeout_field()

    @field_validator("environment_variables")
    @classmethod
    def _env(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for key in v or {}:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"invalid environment variable name {key!r}")
        return v


class ManualConfig(LooseModel):
    assignment: dict[str, Any]
    deadline_seconds: int | None = Field(None, gt=0)
    reminder_thresholds: list[float] | None = None
    escalation: dict[str, Any] | None = None
    form_schema: dict[str, Any] | None = None
    queued_timeout_seconds: int | None = queued_timeout_field()

    @field_validator("assignment")
    @classmethod
    def _assignment(cls, v: dict[str, Any]) -> dict[str, Any]:
        """Must name someone: `user`, `role`, `candidateUsers` or `candidateRoles` (strategy POOL | LOAD_BALANCED)."""
        def names(key: str) -> list[Any]:
            value = v.get(key)
            return ([value] if isinstance(value, str) else value) if value else []

        for key in ("candidateUsers", "candidateRoles"):
            if key in v and not isinstance(v[key], list):
                raise ValueError(f"{key} must be a list of names")
        found = [n for k in ("user", "role", "candidateUsers", "candidateRoles") for n in names(k)]
        if not found or not all(isinstance(n, str) and n.strip() for n in found):
            raise ValueError("assignment must name a user, a role, candidateUsers or candidateRoles")
        strategy = v.get("strategy", "POOL")
        if strategy not in ("POOL", "LOAD_BALANCED"):
            raise ValueError("strategy must be POOL or LOAD_BALANCED")
        if strategy == "LOAD_BALANCED" and not names("candidateUsers"):
            raise ValueError("strategy LOAD_BALANCED needs candidateUsers")
        return v

    @field_validator("reminder_thresholds")
    @classmethod
    def _thresholds(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(0 < f < 1 for f in v):
            raise ValueError("each reminder threshold is a fraction of the deadline between 0 and 1")
        return v

    @field_validator("escalation")
    @classmethod
    def _escalation(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        action = v.get("action")
        if action not in ("NOTIFY_MANAGER", "REASSIGN", "AUTO_COMPLETE"):
            raise ValueError("escalation.action must be NOTIFY_MANAGER, REASSIGN or AUTO_COMPLETE")
        if action == "REASSIGN" and not (isinstance(v.get("to"), str) and v["to"].strip()):
            raise ValueError("escalation REASSIGN needs `to` (a user, or role:<name>)")
        if action == "AUTO_COMPLETE" and "output" not in v:
            raise ValueError("escalation AUTO_COMPLETE needs `output`")
        return v


class IntegrationConfig(LooseModel):
    integration_id: str | None = None
    operation: str | None = None
    params: dict[str, Any] | None = None
    request: dict[str, Any] | None = None
    auth: dict[str, Any] | None = None
    timeout_ms: int | None = Field(None, gt=0)
    rate_limit: dict[str, Any] | None = None
    response_mapping: dict[str, Any] | None = None
    queued_timeout_seconds: int | None = queued_timeout_field()


CONFIG_MODELS: dict[TaskType, type[ApiModel]] = {
    TaskType.AUTOMATED: AutomatedConfig,
    TaskType.MANUAL: ManualConfig,
    TaskType.INTEGRATION: IntegrationConfig,
}


class DefinitionIn(ApiModel):
    id: str = Field(description="a slug: lower-case letters, digits, '.', '_' and '-'")
    name: str = Field(min_length=1, max_length=256)
    description: str | None = Field(None, max_length=4096)
    type: TaskType
    version: str | None = Field(None, max_length=50, pattern=SEMVER, examples=["1.2.0"],
                                description="a semantic version MAJOR.MINOR.PATCH; omit for the next patch")
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    output_schema: dict[str, Any] = Field(default_factory=dict)
    timeout: int | None = Field(None, gt=0, description="ms")
    retry_policy: RetryPolicy | None = None
    execution_config: dict[str, Any]

    @field_validator("id")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG.match(v):
            raise ValueError("must be a slug: ^[a-z0-9][a-z0-9._-]{0,127}$")
        return v


class DefinitionOut(ApiModel):
    id: str
    name: str
    description: str | None
    type: TaskType
    version: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    timeout: int | None
    retry_policy: dict[str, Any] | None
    execution_config: dict[str, Any]
    created_at: datetime


# ---------------------------------------------------------------- tasks


class SubmitIn(ApiModel):
    task_definition_id: str = Field(min_length=1, max_length=128)
    input: dict[str, Any] | list[Any] | str | int | float | bool | None = Field(default_factory=dict)
    priority: Priority = Priority.MEDIUM
    workflow_instance_id: str | None = Field(None, max_length=256)
    correlation_id: str | None = Field(None, max_length=256)
    callback_url: str | None = Field(None, max_length=2048, pattern=r"^https?://")
    execution_config: dict[str, Any] | None = None


class SubmitOut(ApiModel):
    id: str
    status: Status
    created_at: datetime


MAX_BATCH = 1000  # submissions in one POST /tasks/batch
MAX_IDEMPOTENCY_KEY = 255


class BatchItem(SubmitIn):
    """One submission of a batch, with its own optional Idempotency-Key."""

    idempotency_key: str | None = Field(default=None, min_length=1, max_length=MAX_IDEMPOTENCY_KEY)


class BatchIn(ApiModel):
    """`POST /tasks/batch`: each item is validated on its own; valid ones are stored even if others are not."""

    tasks: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)


class BatchEnvelope(ApiModel):
    """The batch body as documented and parsed first: a list of objects (a non-object fails the whole request);
    each object is then checked on its own as a `BatchItem`, so one bad item fails alone."""

    tasks: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH,
                                        description="submissions, each as POST /tasks takes it, plus an optional "
                                                    "idempotencyKey")


class BatchResult(ApiModel):
    """One item's answer: `id`, `status`, `createdAt` (http_status 201 stored, 200 a replay of its key),
    or `error` (the envelope its own POST /tasks would have answered with http_status)."""

    http_status: int
    id: str | None = None
    status: Status | None = None
    created_at: datetime | None = None
    error: ErrorBody | None = None


class BatchOut(ApiModel):
    results: list[BatchResult]


class TaskError(ApiModel):
    code: str
    message: str
    details: Any = None


class TaskOut(ApiModel):
    id: str
    task_definition_id: str
    definition_version: str
    type: TaskType
    status: Status
    priority: Priority
    input: Any
    output: Any
    error: TaskError | None
    assignee: str | None
    candidate_roles: list[str] | None
    due_date: datetime | None
    retry_count: int
    workflow_instance_id: str | None
    correlation_id: str | None
    execution_metadata: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    version: int


class CompleteIn(ApiModel):
    output: Any = Field(description="the person's result, validated against the definition's outputSchema")


class ReassignIn(ApiModel):
    new_assignee: str = Field(max_length=256, description="user name (must not be empty)")
    reason: str | None = Field(None, max_length=1024)


class InboxItem(TaskOut):
    task_name: str
    claimed: bool


class InboxPage(ApiModel):
    items: list[InboxItem]
    pagination: Pagination


class CancelIn(ApiModel):
    reason: str | None = Field(None, max_length=1024)
    force: StrictBool = False


class StatusOut(ApiModel):
    id: str
    status: Status


class EventOut(ApiModel):
    id: int
    type: str
    from_status: str | None
    to_status: str | None
    actor: str | None
    ip: str | None
    user_agent: str | None
    details: Any
    created_at: datetime


class EventPage(ApiModel):
    items: list[EventOut]


class ClaimOut(ApiModel):
    id: str
    status: Status
    assignee: str | None
    claimed_at: datetime | None


class CompleteOut(ApiModel):
    id: str
    status: Status
    completed_by: str | None


class ReassignOut(ApiModel):
    id: str
    status: Status
    assignee: str | None


class InboxDetail(InboxItem):
    description: str | None
    can_claim: bool
    form_schema: dict[str, Any]
    output_schema: dict[str, Any]


class MeOut(ApiModel):
    """Who the credential belongs to and what it may do (pages show only the actions allowed)."""

    sub: str
    kind: Literal["jwt", "api_key"]
    roles: list[str]
    permissions: list[str]


class LogsOut(ApiModel):
    id: str
    stdout: str
    stderr: str


class Pagination(ApiModel):
    page: int
    limit: int
    total_items: int
    total_pages: int


class PageQuery(ApiModel):
    page: int = Field(1, ge=1, le=1_000_000)
    limit: int = Field(20, ge=1, le=100)


class TaskListQuery(PageQuery):
    status: Status | None = None
    type: TaskType | None = None
    task_definition_id: str | None = None
    workflow_instance_id: str | None = None
    assignee: str | None = None
    correlation_id: str | None = Field(None, max_length=256)
    created_after: AwareDatetime | None = Field(None, description="created at or after (RFC 3339, with offset)")
    created_before: AwareDatetime | None = Field(None, description="created before (RFC 3339, with offset)")
    search: str | None = Field(None, min_length=1, max_length=256,
                               description="a task id, the first characters of one (at least 4), or a correlation id")

    @field_validator("created_after", "created_before", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        """RFC 3339 only: pydantic would also read a bare number as Unix time."""
        if isinstance(value, str) and _DATE_TIME_START.match(value) or isinstance(value, datetime) or value is None:
            return value
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-12-01T00:00:00Z")


class DefinitionGetQuery(ApiModel):
    version: str | None = Field(None, max_length=50, pattern=SEMVER, description="e.g. 1.2.0; default: the latest")


class DefinitionListQuery(PageQuery):
    type: TaskType | None = None
    search: str | None = Field(None, max_length=256)


class TaskPage(ApiModel):
    items: list[TaskOut]
    pagination: Pagination


class DefinitionPage(ApiModel):
    items: list[DefinitionOut]
    pagination: Pagination


class ErrorBody(ApiModel):
    code: str
    message: str
    details: Any = None


class ErrorEnvelope(ApiModel):
    error: ErrorBody


class HealthOut(ApiModel):
    status: Literal["UP", "DOWN"]


class ReadyOut(HealthOut):
    checks: dict[str, Literal["UP", "DOWN"]]
    error: ErrorBody | None = None


class SqsTaskMessage(ApiModel):
    """The body of an AUTOMATED task's SQS message, router -> serverless executor (workers/serverless.py).
    Like the broker message: the task id and its dispatch token only; the executor gets the rest from
    the router's start call."""

    task_id: str = Field(min_length=1, max_length=64)
    dispatch_token: str = Field(min_length=1, max_length=64)
    type: Literal["AUTOMATED"] = "AUTOMATED"
    priority: Priority = Priority.MEDIUM


# ---------------------------------------------------------------- dead letters


class DeadLetterQuery(PageQuery):
    resolved: bool | None = Field(None, description="true: already re-driven; false: still open")
    task_definition_id: str | None = None
    task_id: str | None = None


class DeadLetterOut(ApiModel):
    id: str
    task_id: str
    task_definition_id: str
    type: TaskType
    queue: str
    error: TaskError | None
    created_at: datetime
    redriven_at: datetime | None
    redriven_by: str | None
    task_status: Status
    retry_count: int


class DeadLetterPage(ApiModel):
    items: list[DeadLetterOut]
    pagination: Pagination


class RedriveOut(ApiModel):
    id: str
    task_id: str
    status: Status
    redriven_at: datetime
