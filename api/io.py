"""Request parsing into pydantic models (400/422 naming the field) and response serialisation."""

from __future__ import annotations

import math
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from taskexec.contract.schemas import DefinitionOut, EventOut, TaskOut
from taskexec.contract.validation import pydantic_details
from taskexec.core.exceptions import BadRequest, ValidationFailed
from taskexec.store.models import TaskDefinition, TaskEvent, TaskInstance

M = TypeVar("M", bound=BaseModel)

_STRUCTURAL = ("_type", "_parsing", "missing", "extra_forbidden", "json_invalid")


def parse_body(model: type[M], scrub_nul: bool = False, nul_check: bool = True) -> M:
    """Parse the JSON body: malformed or wrong-typed is 400, semantically invalid is 422.

    NUL characters (which PostgreSQL cannot store) are refused with 400, or with `scrub_nul` (a worker's
    report of what user code printed) replaced by U+FFFD so the result is still recorded.
    """
    if not request.data:
        raise BadRequest("request body must be a JSON object", details=[{"field": "body", "message": "empty body"}])
    try:
        data = request.get_json(force=True, silent=False)
    except Exception:
        raise BadRequest("malformed JSON", details=[{"field": "body", "message": "not valid JSON"}]) from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", details=[{"field": "body", "message": "not an object"}])
    if scrub_nul:
        data = scrub(data)
    return parse_item(model, data, nul_check)


def parse_item(model: type[M], data: Any, nul_check: bool = True) -> M:
    """Parse one JSON value (a body, or an item of a batch) into `model`: 400 when malformed or wrong-typed,
    422 when semantically invalid, naming the field. (`nul_check=False`: the caller checks parts itself.)"""
    if not isinstance(data, dict):
        raise BadRequest("must be a JSON object", details=[{"field": "body", "message": "not an object"}])
    where = nul_path(data) if nul_check else None
    if where is not None:  # PostgreSQL cannot store NUL in text or jsonb: refuse it here, not with a 500
        raise BadRequest("strings must not contain NUL characters",
                         details=[{"field": where, "message": "contains NUL"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        structural = any(e["type"].endswith(_STRUCTURAL) for e in exc.errors())
        cls = BadRequest if structural else ValidationFailed
        raise cls("invalid request body", details=pydantic_details(exc)) from None


def nul_path(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or object key) in `value` that contains a NUL character."""
    if isinstance(value, str):
        return (path or "body") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return sub.replace("\x00", "\\0")
            found = nul_path(item, sub)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = nul_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def scrub(value: Any) -> Any:
    """`value` with every NUL in its strings and keys replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def reject_nul_in_url() -> None:
    """`before_request` hook: a NUL in the path or query string is a 400, never a database error."""
    if "\x00" in request.path:
        raise BadRequest("the path must not contain NUL characters",
                         details=[{"field": "path", "message": "contains NUL"}])
    for key, value in request.args.items(multi=True):
        if "\x00" in key or "\x00" in value:
            raise BadRequest("query parameters must not contain NUL characters",
                             details=[{"field": key.replace("\x00", "\\0"), "message": "contains NUL"}])


def parse_query(model: type[M]) -> M:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise BadRequest("invalid query parameters", details=pydantic_details(exc)) from None


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)


def task_out(t: TaskInstance) -> dict[str, Any]:
    return dump(
        TaskOut.model_validate(dict(
            id=t.id, task_definition_id=t.definition_id, definition_version=t.definition_version, type=t.type,
            status=t.status, priority=t.priority, input=t.input, output=t.output, error=t.error,
            assignee=t.assignee, candidate_roles=t.candidate_roles, due_date=t.due_date,
            retry_count=t.retry_count, workflow_instance_id=t.workflow_instance_id,
            correlation_id=t.correlation_id, execution_metadata=t.execution_metadata,
            created_at=t.created_at, updated_at=t.updated_at, version=t.version,
        ))
    )


def definition_out(d: TaskDefinition) -> dict[str, Any]:
    return dump(
        DefinitionOut.model_validate(dict(
            id=d.id, name=d.name, description=d.description, type=d.type, version=d.version,
            input_schema=d.input_schema, output_schema=d.output_schema, timeout=d.timeout_ms,
            retry_policy=d.retry_policy, execution_config=d.execution_config, created_at=d.created_at,
        ))
    )


def event_out(e: TaskEvent) -> dict[str, Any]:
    return dump(EventOut.model_validate(e, from_attributes=True))


def page(items: list[dict[str, Any]], page_no: int, limit: int, total: int) -> dict[str, Any]:
    return {
        "items": items,
        "pagination": {"page": page_no, "limit": limit, "totalItems": total,
                       "totalPages": math.ceil(total / limit) if total else 0},
    }
