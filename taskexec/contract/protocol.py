"""The messages between the worker pools and the router's internal API, as models both sides share.

A pool never builds or reads these as dicts: `taskexec.clients.client.RouterClient` sends the `...In` models
and parses the answers into the `...Out` models, and the router (`api/internal.py`) parses the same
`...In` models and answers with the `...Out` ones. On the wire they are camelCase JSON.

Per task a pool sends a *start* (may this delivery run? answered with the `Job`) and a *finish* (the
attempt's result); an integration attempt that waits for its target's rate limit sends a *defer*
instead of a finish, the reaper a *lost* for an attempt whose worker is gone, and the manual pool an
*assign*. Several of them, from the threads of one worker process, may travel together in one
`ReportsIn` (``POST /internal/v1/reports``); each gets its own `ReportOut` in the same order, with the
HTTP status and body that the single endpoint (``/internal/v1/tasks/<id>/<kind>``) would have answered.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from taskexec.contract.schemas import ApiModel, ErrorBody, TaskError
from taskexec.core.constants import Priority, Status, TaskType

# Reports one worker process sends in one call at most (the threads of a pool, so a few dozen at most).
MAX_REPORTS = 500


class Answer(BaseModel):
    """An answer read by a pool: unknown fields are ignored, so a newer router can add some."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


# ---------------------------------------------------------------- pool -> router


class StartIn(ApiModel):
    """A delivery of a task's message: run it? (also what the manual pool's *assign* sends)."""

    dispatch_token: str
    worker_id: str = Field(max_length=256)
    start_id: str | None = Field(default=None, max_length=64,
                                 description="one per delivery; repeated on a retried call")


class FinishIn(ApiModel):
    """The result of one attempt."""

    attempt: int = Field(ge=1)
    status: Literal["COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"]
    output: Any = None
    error: TaskError | None = None
    execution_metadata: dict[str, Any] | None = None
    stdout: str | None = None
    stderr: str | None = None
    retry: bool = Field(False, description="ask for another attempt (our fault or retryable error)")


class DeferIn(ApiModel):
    """Put a running attempt back to wait (e.g. its target's rate limit); not counted as a retry."""

    attempt: int = Field(ge=1)
    delay_ms: int = Field(ge=0, le=3_600_000, description="how long the task waits before it is queued again")
    reason: str = Field("deferred", max_length=500)


class LostIn(ApiModel):
    """The worker running an attempt is gone (the reaper removed its container)."""

    attempt: int | None = Field(default=None, ge=1, description="the attempt whose worker is gone (None: current)")
    reason: str = Field("worker gone", max_length=500)


# ---------------------------------------------------------------- router -> pool


class JobTask(Answer):
    id: str
    type: TaskType
    input: Any = None
    priority: Priority = Priority.MEDIUM
    workflow_instance_id: str | None = None
    correlation_id: str | None = None
    retry_count: int = 0
    # the submitting request's X-Request-Id and traceparent (taskexec.observability.tracing): on the pool's log lines
    # and calls for this task
    request_id: str | None = None
    traceparent: str | None = None


class JobDefinition(Answer):
    id: str
    version: int | str  # an opaque label for the pool: it only names the version
    name: str
    output_schema: dict[str, Any] = Field(default_factory=dict)
    timeout: int | None = Field(default=None, description="ms")
    retry_policy: dict[str, Any] | None = None
    execution_config: dict[str, Any] = Field(default_factory=dict,
                                             description="the definition's, overlaid with the task's own")


class Job(Answer):
    """Everything a pool needs to run the current attempt of a task."""

    attempt: int
    dispatch_token: str
    previous_worker: str | None = Field(default=None,
                                        description="set on a redelivery: its attempt may still run there")
    task: JobTask
    definition: JobDefinition


class StartOut(Answer):
    """`job` when this delivery runs; otherwise why not, and the task's status."""

    job: Job | None = None
    reason: str | None = None
    status: Status | None = None


class TaskStateOut(Answer):
    """The task after a finish, defer or assign."""

    id: str
    status: Status
    retry_count: int = 0


class LostOut(Answer):
    id: str
    changed: bool
    status: Status | None = None


class TaskStatusOut(Answer):
    id: str
    status: Status
    attempt: int = 0


# ---------------------------------------------------------------- several reports in one call


class StartReport(StartIn):
    kind: Literal["start"] = "start"
    task_id: str = Field(max_length=64)


class AssignReport(StartIn):
    kind: Literal["assign"] = "assign"
    task_id: str = Field(max_length=64)


class FinishReport(FinishIn):
    kind: Literal["finish"] = "finish"
    task_id: str = Field(max_length=64)


class DeferReport(DeferIn):
    kind: Literal["defer"] = "defer"
    task_id: str = Field(max_length=64)


class LostReport(LostIn):
    kind: Literal["lost"] = "lost"
    task_id: str = Field(max_length=64)


Report = Annotated[StartReport | AssignReport | FinishReport | DeferReport | LostReport, Field(discriminator="kind")]


class ReportsIn(ApiModel):
    items: list[Report] = Field(min_length=1, max_length=MAX_REPORTS)


class ReportOut(Answer):
    """One report's answer: the status and body its single endpoint would have given."""

    status: int
    result: dict[str, Any] | None = Field(default=None,
                                          description="StartOut, TaskStateOut or LostOut by the report's kind")
    error: ErrorBody | None = None


class ReportsOut(Answer):
    results: list[ReportOut]
