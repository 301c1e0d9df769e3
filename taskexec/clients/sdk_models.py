"""What `taskexec.clients.sdk.TaskexecClient` returns: the API's response models, read leniently.

Each class is the router's own response model (`taskexec.contract.schemas`) with `extra="ignore"`, so a client keeps
working against a newer router that adds fields. Attributes are snake_case (`task.task_definition_id`);
`model_dump(by_alias=True)` gives the API's camelCase JSON back.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from taskexec.contract import schemas
from taskexec.core.constants import TERMINAL_STATUSES, Status

LENIENT = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
T = TypeVar("T", bound=BaseModel)


class TaskError(schemas.TaskError):
    model_config = LENIENT


class Task(schemas.TaskOut):
    """A task instance: status, input, output, error, execution metadata."""

    model_config = LENIENT
    error: TaskError | None

    @property
    def finished(self) -> bool:
        return Status(self.status) in TERMINAL_STATUSES


class Submitted(schemas.SubmitOut):
    """The answer to a submission; `replayed` is True when the Idempotency-Key matched an earlier one (200)."""

    model_config = LENIENT
    replayed: bool = False


class BatchItemResult(schemas.BatchResult):
    """One item of a batch: `id`/`status` when stored (`http_status` 201, or 200 for a replayed key), else
    `error` (the envelope its own submission would have got)."""

    model_config = LENIENT

    @property
    def ok(self) -> bool:
        return self.http_status < 300


BatchItemResult.model_rebuild(_types_namespace=vars(schemas))  # `error: ErrorBody` is declared later there


class TaskStatus(schemas.StatusOut):
    model_config = LENIENT


class Definition(schemas.DefinitionOut):
    model_config = LENIENT


class Event(schemas.EventOut):
    """One entry of a task's history: a state change or a human action, who, when, from where."""

    model_config = LENIENT


class Logs(schemas.LogsOut):
    model_config = LENIENT


class InboxTask(schemas.InboxItem):
    model_config = LENIENT
    error: TaskError | None


class InboxTaskDetail(schemas.InboxDetail):
    model_config = LENIENT
    error: TaskError | None


class Claimed(schemas.ClaimOut):
    model_config = LENIENT


class Completed(schemas.CompleteOut):
    model_config = LENIENT


class Reassigned(schemas.ReassignOut):
    model_config = LENIENT


class DeadLetter(schemas.DeadLetterOut):
    model_config = LENIENT
    error: TaskError | None


class Redriven(schemas.RedriveOut):
    model_config = LENIENT


class Me(schemas.MeOut):
    model_config = LENIENT


class Pagination(schemas.Pagination):
    model_config = LENIENT


class Page(BaseModel, Generic[T]):
    """One page of a list: `items` and `pagination` (page, limit, total_items, total_pages)."""

    model_config = LENIENT
    items: list[T]
    pagination: Pagination


def page_of(model: type[T], data: Any) -> Page[T]:
    return Page[model].model_validate(data)  # type: ignore[valid-type]
