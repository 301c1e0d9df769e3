"""Task instances: submit, list, get, logs, events, cancel, retry."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from api.io import event_out, page, parse_body, parse_item, parse_query, task_out
from api.ratelimit import bulk
from api.routing import Header, operation
from api.runtime import runtime
from api.security import audit_fields, current
from api.shedding import batch_submissions, sheddable
from taskexec.contract.schemas import (
    MAX_IDEMPOTENCY_KEY,
    BatchEnvelope,
    BatchItem,
    BatchOut,
    BatchResult,
    CancelIn,
    ErrorBody,
    EventPage,
    LogsOut,
    StatusOut,
    SubmitIn,
    SubmitOut,
    TaskListQuery,
    TaskOut,
    TaskPage,
)
from taskexec.core.constants import API_PREFIX, AuditEvent, Permission, Status, TaskType
from taskexec.core.exceptions import BadRequest, NotFound, TaskexecError
from taskexec.services.dispatch import publish_new
from taskexec.store.models import TaskInstance
from taskexec.store.visibility import can_see

bp = Blueprint("tasks", __name__, url_prefix=f"{API_PREFIX}/tasks")

IDEMPOTENCY_KEY = Header("Idempotency-Key", "a retry with the same key and body returns the same task (200)",
                         MAX_IDEMPOTENCY_KEY)


def load_visible(s, task_id: str) -> TaskInstance:
    """The task, if the caller may see it (`taskexec.store.visibility`); else 404, as if it did not exist."""
    task = runtime().manager.get_task(s, task_id)
    if not can_see(task, current()):
        raise NotFound(f"task {task_id} not found")
    return task


@sheddable()
@operation(bp, "POST", "", summary="Submit a task", permission=Permission.EXECUTE, body=SubmitIn, response=SubmitOut,
           status=201, also={200: "replay: the task stored earlier under the same Idempotency-Key"}, errors=(404,),
           headers=(IDEMPOTENCY_KEY,),
           description="`input` is validated against the definition's `inputSchema` (formats included, 422 "
                       "naming each field); an unknown definition is a 404.")
def submit():
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY):
        raise BadRequest("Idempotency-Key must be 1-255 characters",
                         details=[{"field": "Idempotency-Key", "message": "bad length"}])
    body = parse_body(SubmitIn)
    rt = runtime()
    [result] = rt.lifecycle.submit([(body, key)], current())
    if isinstance(result, TaskexecError):
        raise result
    if result.created:
        publish_new(rt.db, rt.publisher, [(result.id, result.type, result.priority, result.dispatch_token)], rt.marks)
    return jsonify({"id": result.id, "status": result.status, "createdAt": result.created_at.isoformat()}), (
        201 if result.created else 200
    )


@bulk
@sheddable(batch_submissions)
@operation(bp, "POST", "/batch", summary="Submit up to 1,000 tasks in one request", permission=Permission.EXECUTE,
           body=BatchEnvelope, response=BatchOut,
           description="Each item may carry its own `idempotencyKey` (the key space of the `Idempotency-Key` "
                       "header). One result per item, in order: `httpStatus` 201 stored, 200 a replay, or the "
                       "item's own error envelope; the valid items are stored even when others are not. Counts "
                       "against the bulk rate limit.")
def submit_batch():
    """Up to MAX_BATCH submissions in one request, each with its own optional `idempotencyKey`: one result
    per item, in order; the valid items are stored and published even when others are not."""
    envelope = parse_body(BatchEnvelope, nul_check=False)  # each item is checked on its own
    rt = runtime()
    results: list[BatchResult | None] = [None] * len(envelope.tasks)
    valid: list[tuple[int, SubmitIn, str | None]] = []
    for i, raw in enumerate(envelope.tasks):
        try:
            item = parse_item(BatchItem, raw)
        except TaskexecError as exc:
            results[i] = _error(exc)
            continue
        valid.append((i, SubmitIn(**item.model_dump(exclude={"idempotency_key"})), item.idempotency_key))
    stored = rt.lifecycle.submit([(body, key) for _, body, key in valid], current()) if valid else []
    fresh = []
    for (i, _, _), result in zip(valid, stored, strict=True):
        if isinstance(result, TaskexecError):
            results[i] = _error(result)
            continue
        results[i] = BatchResult(http_status=201 if result.created else 200, id=result.id,
                                 status=Status(result.status), created_at=result.created_at)
        if result.created:
            fresh.append((result.id, result.type, result.priority, result.dispatch_token))
    publish_new(rt.db, rt.publisher, fresh, rt.marks)
    return jsonify(BatchOut(results=[r for r in results if r is not None]).model_dump(
        mode="json", by_alias=True, exclude_none=True))


def _error(exc: TaskexecError) -> BatchResult:
    return BatchResult(http_status=exc.status, error=ErrorBody.model_validate(exc.error_body()))


@operation(bp, "GET", "", summary="List tasks, newest first", permission=Permission.LIST, query=TaskListQuery,
           response=TaskPage)
def list_():
    q = parse_query(TaskListQuery)
    who = current()
    rt = runtime()
    with rt.db.session() as s:
        rows, total = rt.manager.list_tasks(s, q, viewer=who)
        return jsonify(page([task_out(t) for t in rows], q.page, q.limit, total))


@operation(bp, "GET", "/<task_id>", summary="Task detail", permission=Permission.READ, response=TaskOut)
def get(task_id: str):
    rt = runtime()
    with rt.db.session() as s:
        task = load_visible(s, task_id)
        if task.type == TaskType.MANUAL and not current().has(Permission.INTERNAL):
            rt.manager.record(s, task, AuditEvent.VIEWED, current().sub, **audit_fields())
        return jsonify(task_out(task))


@operation(bp, "GET", "/<task_id>/logs", summary="Captured stdout and stderr", permission=Permission.READ,
           response=LogsOut)
def logs(task_id: str):
    with runtime().db.session() as s:
        task = load_visible(s, task_id)
        return jsonify({"id": task.id, "stdout": task.stdout or "", "stderr": task.stderr or ""})


@operation(bp, "GET", "/<task_id>/events", summary="The task's history: state changes and human actions",
           permission=Permission.READ, response=EventPage)
def events(task_id: str):
    rt = runtime()
    with rt.db.session() as s:
        load_visible(s, task_id)
        return jsonify({"items": [event_out(e) for e in rt.manager.events(s, task_id)]})


@operation(bp, "POST", "/<task_id>/cancel", summary="Cancel a task (a running container is killed)",
           permission=Permission.CANCEL, body=CancelIn, body_required=False, response=StatusOut, errors=(409,))
def cancel(task_id: str):
    body = parse_body(CancelIn) if request.data else CancelIn(reason=None)
    rt = runtime()
    with rt.db.session() as s:
        load_visible(s, task_id)
        task = rt.manager.cancel(s, task_id, body.reason, current().sub, **audit_fields())
    if rt.dispatcher:
        rt.dispatcher.wake.set()
    return jsonify({"id": task.id, "status": task.status})


@operation(bp, "POST", "/<task_id>/retry", summary="Run a FAILED or TIMED_OUT task again",
           permission=Permission.EXECUTE, response=StatusOut, errors=(409,))
def retry(task_id: str):
    rt = runtime()
    with rt.db.session() as s:
        load_visible(s, task_id)
        task = rt.manager.retry(s, task_id, current().sub)
    if rt.dispatcher:
        rt.dispatcher.wake.set()
    return jsonify({"id": task.id, "status": task.status})
