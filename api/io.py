"""Request parsing into pydantic models (400/422 naming the field) and response serialisation."""

from __future__ import annotations

import math
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from taskexec.exceptions import BadRequest, ValidationFailed
from taskexec.models import TaskDefinition, TaskEvent, TaskInstance
from taskexec.schemas import DefinitionOut, EventOut, TaskOut
from taskexec.validation import pydantic_details

M = TypeVar("M", bound=BaseModel)

_STRUCTURAL = ("_type", "_parsing", "missing", "extra_forbidden", "json_invalid")


def parse_body(model: type[M]) -> M:
    """Parse the JSON body: malformed or wrong-typed is 400, semantically invalid is 422."""
    if not request.data:
        raise BadRequest("request body must be a JSON object", details=[{"field": "body", "message": "empty body"}])
    try:
        data = request.get_json(force=True, silent=False)
    except Exception:
        raise BadRequest("malformed JSON", details=[{"field": "body", "message": "not valid JSON"}]) from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", details=[{"field": "body", "message": "not an object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        structural = any(e["type"].endswith(_STRUCTURAL) for e in exc.errors())
        cls = BadRequest if structural else ValidationFailed
        raise cls("invalid request body", details=pydantic_details(exc)) from None


def parse_query(model: type[M]) -> M:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise BadRequest("invalid query parameters", details=pydantic_details(exc)) from None


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)


def task_out(t: TaskInstance) -> dict[str, Any]:
    return dump(
        TaskOut(
            id=t.id, task_definition_id=t.definition_id, definition_version=t.definition_version, type=t.type,
            status=t.status, priority=t.priority, input=t.input, output=t.output, error=t.error,
            assignee=t.assignee, candidate_roles=t.candidate_roles, due_date=t.due_date,
            retry_count=t.retry_count, workflow_instance_id=t.workflow_instance_id,
            correlation_id=t.correlation_id, execution_metadata=t.execution_metadata,
            created_at=t.created_at, updated_at=t.updated_at, version=t.version,
        )  # type: ignore[arg-type]
    )


def definition_out(d: TaskDefinition) -> dict[str, Any]:
    return dump(
        DefinitionOut(
            id=d.id, name=d.name, description=d.description, type=d.type, version=d.version,
            input_schema=d.input_schema, output_schema=d.output_schema, timeout=d.timeout_ms,
            retry_policy=d.retry_policy, execution_config=d.execution_config, created_at=d.created_at,
        )  # type: ignore[arg-type]
    )


def event_out(e: TaskEvent) -> dict[str, Any]:
    return dump(EventOut.model_validate(e, from_attributes=True))


def page(items: list[dict[str, Any]], page_no: int, limit: int, total: int) -> dict[str, Any]:
    return {
        "items": items,
        "pagination": {"page": page_no, "limit": limit, "totalItems": total,
                       "totalPages": math.ceil(total / limit) if total else 0},
    }
