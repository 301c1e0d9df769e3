"""Task operations over the database: the layer every router endpoint goes through."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, or_, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from taskexec.contract.protocol import FinishIn, Job, JobDefinition, JobTask, StartOut
from taskexec.contract.schemas import DefinitionIn, DefinitionListQuery, SubmitIn, TaskListQuery
from taskexec.contract.validation import validate_definition, validate_execution_config, validate_instance
from taskexec.core import semver
from taskexec.core.config import Settings
from taskexec.core.constants import TERMINAL_STATUSES, AuditEvent, Priority, Status, TaskErrorCode, TaskType
from taskexec.core.exceptions import Conflict, NotFound, ValidationFailed
from taskexec.core.limits import queue_deadline
from taskexec.observability import tracing
from taskexec.services.callbacks import check_submitted
from taskexec.services.deadletters import record_dead_letter, resolve_dead_letters
from taskexec.services.hotpath import TaskRow
from taskexec.services.recovery import Recovery
from taskexec.store.auth import Principal
from taskexec.store.db import Database
from taskexec.store.models import TaskDefinition, TaskEvent, TaskInstance, new_id, parse_time, utcnow
from taskexec.store.statechange import change_state, record_created
from taskexec.store.taskstore import LATEST_DEFINITION as _LATEST_DEFINITION
from taskexec.store.visibility import visible_to

# A freshly submitted task is published by the request itself; the dispatcher only takes over after this.
PUBLISH_GRACE = timedelta(seconds=5)
# ... plus this per task of a batch, which its request publishes one after the other.
PUBLISH_GRACE_PER_TASK = timedelta(milliseconds=50)
# Attempts allowed for our own faults (SANDBOX_ERROR, worker lost) when the definition has no retryPolicy.
DEFAULT_INFRA_RETRIES = 3
# A target's Retry-After is honoured up to this many seconds.
MAX_RETRY_AFTER_S = 3600.0
# Final whatever a definition's retryableErrors say: a user's cancel, an egress refusal (the same URL is
# refused again), a task that waited too long in its queue.
NEVER_RETRIED = frozenset({TaskErrorCode.CANCELLED.value, TaskErrorCode.DESTINATION_NOT_ALLOWED.value,
                           TaskErrorCode.QUEUE_TIMEOUT.value})
# A stored definition version never changes: (id, version) lookups are answered from memory, up to this many.
DEFINITION_CACHE_SIZE = 1024
# The statements every task goes through, built once (building and cache-keying one costs more CPU than running it).
_TASK = select(TaskInstance).where(TaskInstance.id == bindparam("task_id"))
_TASK_FOR_UPDATE = _TASK.with_for_update()


def retry_wanted(policy: dict[str, Any] | None, error: dict[str, Any] | None, requested: bool) -> bool:
    """The rule of `TaskManager.retryable`, on a definition's retry policy (the hot path asks it too)."""
    code = (error or {}).get("code")
    if code in NEVER_RETRIED:
        return False
    allowed = (policy or {}).get("retryableErrors")
    if allowed is not None:
        return code in allowed
    return requested


class TaskManager:
    """Definitions, tasks, their events; status changes go through `statechange.change_state`."""

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db  # for definitions missing from the cache when no session is at hand
        self._versions: dict[tuple[str, str], TaskDefinition] = {}

    # ------------------------------------------------------------ definitions

    def create_definition(self, s: Session, body: DefinitionIn, actor: str | None) -> TaskDefinition:
        config = validate_definition(body, self.settings)
        latest = s.scalar(select(TaskDefinition.version).where(TaskDefinition.id == body.id)
                          .order_by(TaskDefinition.version_key.desc()).limit(1))
        version = body.version or semver.next_patch(latest)
        if s.get(TaskDefinition, (body.id, version)) is not None:
            raise Conflict(f"definition {body.id} version {version} exists", details={"field": "version"})
        row = TaskDefinition(
            id=body.id,
            version=version,
            version_key=semver.sort_key(version),
            name=body.name,
            description=body.description,
            type=body.type.value,
            input_schema=body.input_schema,
            output_schema=body.output_schema,
            timeout_ms=body.timeout,
            retry_policy=body.retry_policy.model_dump(by_alias=True) if body.retry_policy else None,
            execution_config=config,
            created_by=actor,
        )
        s.add(row)
        try:
            s.flush()
        except IntegrityError:
            raise Conflict(f"definition {body.id} version {version} exists", details={"field": "version"}) from None
        return row

    def apply_definition(self, s: Session, body: DefinitionIn, actor: str | None) -> tuple[TaskDefinition, bool]:
        """Register `body` unless the latest version already says the same; (row, created)."""
        latest = s.scalar(_LATEST_DEFINITION, {"def_id": body.id})
        if latest is not None and _same_definition(latest, body, validate_definition(body, self.settings)) and (
                body.version in (None, latest.version)):
            return latest, False
        return self.create_definition(s, body, actor), True

    def get_definition(self, s: Session, def_id: str, version: str | None = None) -> TaskDefinition:
        """One version, or the latest; a given version may be a shared detached copy (read it, never change it)."""
        if version is not None:
            cached = self._versions.get((def_id, version))
            if cached is not None:
                return cached
            row = s.get(TaskDefinition, (def_id, version))
        else:
            row = s.scalar(_LATEST_DEFINITION, {"def_id": def_id})
        if row is None:
            raise NotFound(f"task definition {def_id!r} not found", details={"field": "taskDefinitionId"})
        if len(self._versions) >= DEFINITION_CACHE_SIZE:
            self._versions.clear()
        self._versions[(row.id, row.version)] = TaskDefinition(
            **{attr.key: getattr(row, attr.key) for attr in sa_inspect(TaskDefinition).column_attrs})
        return row

    def cached_definition(self, def_id: str, version: Any) -> TaskDefinition:
        """A stored version from this process's cache, or from the database (sessions of `self.db`)."""
        cached = self._versions.get((def_id, version))
        if cached is not None:
            return cached
        if self.db is None:
            raise RuntimeError("TaskManager without a database: pass a session to get_definition")
        with self.db.session() as s:
            self.get_definition(s, def_id, version)
        return self._versions[(def_id, version)]

    def list_definitions(self, s: Session, q: DefinitionListQuery) -> tuple[list[TaskDefinition], int]:
        latest = (
            select(TaskDefinition.id, func.max(TaskDefinition.version_key).label("k"))
            .group_by(TaskDefinition.id)
            .subquery()
        )
        stmt = select(TaskDefinition).join(
            latest, (TaskDefinition.id == latest.c.id) & (TaskDefinition.version_key == latest.c.k)
        )
        if q.type:
            stmt = stmt.where(TaskDefinition.type == q.type.value)
        if q.search:  # a literal substring: `%`, `_` and `\` in the search are not LIKE wildcards
            literal = q.search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            like = f"%{literal}%"
            stmt = stmt.where(or_(func.lower(TaskDefinition.name).like(like, escape="\\"),
                                  TaskDefinition.id.like(like, escape="\\")))
        return _page(s, stmt.order_by(TaskDefinition.id), q.page, q.limit)

    # ------------------------------------------------------------ tasks

    def submit(
        self, s: Session, body: SubmitIn, principal: Principal, idempotency_key: str | None
    ) -> tuple[TaskInstance, bool]:
        """Store a new PENDING task (or return the one stored under the same key)."""
        scoped_key = f"{principal.sub}:{idempotency_key}" if idempotency_key else None
        if scoped_key:
            existing = s.scalar(select(TaskInstance).where(TaskInstance.idempotency_key == scoped_key))
            if existing is not None:
                return self._replay(s, existing, body), False
        definition = self.get_definition(s, body.task_definition_id)
        check_submitted(body.callback_url, self.settings.callback_allowed)
        validate_instance(definition.input_schema, body.input, "input")
        config = None
        if body.execution_config:
            merged = {**definition.execution_config, **body.execution_config}
            config = validate_execution_config(TaskType(definition.type), merged, self.settings)
        now = utcnow()
        task = TaskInstance(
            id=new_id(),
            definition_id=definition.id,
            definition_version=definition.version,
            type=definition.type,
            status=Status.PENDING.value,
            priority=body.priority.value,
            input=body.input,
            workflow_instance_id=body.workflow_instance_id,
            correlation_id=body.correlation_id or body.workflow_instance_id,
            callback_url=body.callback_url,
            execution_config=config,
            idempotency_key=scoped_key,
            created_by=principal.sub,
            # the submitting request's ids travel with the task to the pools' logs and calls
            # (taskexec.observability.tracing)
            execution_metadata=trace_metadata(),
            dispatch_token=new_id(),
            available_at=now + PUBLISH_GRACE,  # published by this request; the dispatcher takes over after this
            queue_deadline=queue_deadline(self.settings, now, definition.execution_config, config),
            retry_count=0,
            attempt=0,
            version=1,
            created_at=now,
            updated_at=now,
        )
        s.add(task)
        try:
            s.flush()
        except IntegrityError:
            s.rollback()
            existing = s.scalar(select(TaskInstance).where(TaskInstance.idempotency_key == scoped_key))
            if existing is None:
                raise
            return self._replay(s, existing, body), False
        record_created(s, self.settings, task, principal.sub, now)
        return task, True

    def _replay(self, s: Session, task: TaskInstance, body: SubmitIn) -> TaskInstance:
        """The task stored under an Idempotency-Key, if `body` asks for the same thing; else 422 (the
        IETF Idempotency-Key draft's answer to a key reused with a different payload)."""
        same = (task.definition_id == body.task_definition_id and task.input == body.input
                and task.priority == body.priority.value and task.workflow_instance_id == body.workflow_instance_id
                and task.correlation_id == (body.correlation_id or body.workflow_instance_id)
                and task.callback_url == body.callback_url)
        if same and (body.execution_config or task.execution_config):
            definition = self.get_definition(s, task.definition_id, task.definition_version)
            merged = {**definition.execution_config, **(body.execution_config or {})}
            same = bool(body.execution_config) and task.execution_config == validate_execution_config(
                TaskType(definition.type), merged, self.settings)
        if not same:
            raise ValidationFailed("Idempotency-Key was already used with a different request body",
                                   details=[{"field": "Idempotency-Key", "message": "reused with another body",
                                             "taskId": task.id}])
        return task

    def get_task(self, s: Session, task_id: str, for_update: bool = False) -> TaskInstance:
        task = s.scalar(_TASK_FOR_UPDATE if for_update else _TASK, {"task_id": task_id})
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    def list_tasks(self, s: Session, q: TaskListQuery, owner: str | None = None,
                   viewer: Principal | None = None) -> tuple[list[TaskInstance], int]:
        """A filtered page; with ``viewer``, only the tasks that person may see (`taskexec.store.visibility`, in
        SQL, so counts and pages are right)."""
        stmt = select(TaskInstance)
        if viewer is not None:
            stmt = stmt.where(visible_to(viewer))
        for column, value in (
            (TaskInstance.status, q.status.value if q.status else None),
            (TaskInstance.type, q.type.value if q.type else None),
            (TaskInstance.definition_id, q.task_definition_id),
            (TaskInstance.workflow_instance_id, q.workflow_instance_id),
            (TaskInstance.assignee, q.assignee),
            (TaskInstance.correlation_id, q.correlation_id),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if q.created_after is not None:
            stmt = stmt.where(TaskInstance.created_at >= q.created_after.astimezone(UTC))
        if q.created_before is not None:
            stmt = stmt.where(TaskInstance.created_at < q.created_before.astimezone(UTC))
        if q.search:
            stmt = stmt.where(_search(q.search.strip()))
        if owner is not None:
            stmt = stmt.where(TaskInstance.created_by == owner)
        return _page(s, stmt.order_by(TaskInstance.created_at.desc(), TaskInstance.id), q.page, q.limit)

    def events(self, s: Session, task_id: str) -> list[TaskEvent]:
        self.get_task(s, task_id)
        return list(s.scalars(select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)))

    def record(self, s: Session, task: TaskInstance, event_type: AuditEvent, actor: str | None,
               **fields: Any) -> None:
        """An audit event that is not a status change (a view, a failed attempt, ...)."""
        s.add(TaskEvent(task_id=task.id, type=event_type.value, actor=actor, created_at=utcnow(), **fields))

    def cancel(self, s: Session, task_id: str, reason: str | None, actor: str, **audit: Any) -> TaskInstance:
        task = self.get_task(s, task_id, for_update=True)
        if Status(task.status) in TERMINAL_STATUSES:
            raise Conflict(f"task {task_id} is already {task.status}", details={"status": task.status})
        error = {"code": TaskErrorCode.CANCELLED.value, "message": reason or "cancelled", "details": {"by": actor}}
        self._move(s, task, Status.CANCELLED, actor=actor, error=error, details={"reason": reason}, **audit)
        return task

    def retry(self, s: Session, task_id: str, actor: str) -> TaskInstance:
        task = self.get_task(s, task_id, for_update=True)
        if task.status not in (Status.FAILED.value, Status.TIMED_OUT.value):
            raise Conflict(f"only FAILED or TIMED_OUT tasks can be retried; task is {task.status}")
        self._requeue(s, task, actor=actor, delay_s=0.0, details={"manual": True})
        resolve_dead_letters(s, task.id, actor)
        return task

    # ------------------------------------------------------------ internal API (worker pools)

    def start(self, s: Session, task_id: str, dispatch_token: str, worker_id: str,
              start_id: str | None = None) -> StartOut:
        """A worker received a message: decide whether it runs, and hand it what it needs.

        A message for a RUNNING task is a redelivery. Before the attempt's deadline its worker may well be
        alive (a broker connection blip makes Celery/kombu restore, and RabbitMQ requeue, the messages of
        running tasks): it does not run again; a worker that is really gone is found by the stale sweep or
        the reaper. `start_id` (one per delivery, repeated when the worker retries this call) makes the
        call idempotent: the same delivery asking again gets its attempt back. (`taskexec.services.lifecycle`
        takes the common case, a PENDING task and its current token, without the ORM.)
        """
        task = self.get_task(s, task_id, for_update=True)
        status = Status(task.status)
        if status in TERMINAL_STATUSES:
            return StartOut(reason=f"task is already {status.value}", status=status)
        if dispatch_token != task.dispatch_token:
            return StartOut(reason="stale message (superseded dispatch)", status=status)
        if status not in (Status.PENDING, Status.RUNNING):
            return StartOut(reason=f"task is {status.value}", status=status)
        if status is Status.RUNNING:
            if start_id and (task.execution_metadata or {}).get("startId") == start_id:
                return StartOut(job=self.job(s, task, None))
            if utcnow() < Recovery(self).deadline(s, task):
                return StartOut(status=status, reason=f"attempt {task.attempt} is still running on {task.worker_id} "
                                                      "(duplicate delivery)")
        previous = task.worker_id if status is Status.RUNNING else None
        now = utcnow()
        meta = dict(task.execution_metadata or {})
        meta.update({"startTime": now.isoformat(), "workerId": worker_id})
        meta.pop("endTime", None)
        meta.pop("startId", None)
        if start_id:
            meta["startId"] = start_id
        self._move(
            s, task, Status.RUNNING, actor=f"worker:{worker_id}", attempt=task.attempt + 1, worker_id=worker_id,
            execution_metadata=meta, details={"redeliveredFrom": previous} if previous else None,
        )
        return StartOut(job=self.job(s, task, previous))

    def job(self, s: Session | None, task: TaskInstance | TaskRow, previous: str | None) -> Job:
        """What a worker needs to run the current attempt of `task` (`s` is needed only on a cache miss)."""
        definition = (self.get_definition(s, task.definition_id, task.definition_version) if s is not None
                      else self.cached_definition(task.definition_id, task.definition_version))
        meta = task.execution_metadata or {}
        return Job(
            attempt=task.attempt, dispatch_token=task.dispatch_token or "", previous_worker=previous,
            task=JobTask(id=task.id, type=TaskType(task.type), input=task.input, priority=Priority(task.priority),
                         workflow_instance_id=task.workflow_instance_id, correlation_id=task.correlation_id,
                         retry_count=task.retry_count, request_id=meta.get("requestId"),
                         traceparent=meta.get("traceparent")),
            definition=JobDefinition(id=definition.id, version=definition.version, name=definition.name,
                                     output_schema=definition.output_schema, timeout=definition.timeout_ms,
                                     retry_policy=definition.retry_policy,
                                     execution_config={**definition.execution_config, **(task.execution_config or {})}),
        )

    def assign(self, s: Session, task_id: str, dispatch_token: str, worker_id: str) -> TaskInstance:
        """A manual task leaves the queue: offer it to its user or roles, set its due date
        (`taskexec.people.manual`)."""
        from taskexec.people.manual import ManualTasks

        return ManualTasks(self).assign(s, task_id, dispatch_token, worker_id)

    def finish(self, s: Session, task_id: str, body: FinishIn, worker: str) -> TaskInstance:
        """Record an attempt's result; a stale attempt or a finished task gets 409."""
        task = self.get_task(s, task_id, for_update=True)
        if task.status != Status.RUNNING.value or task.attempt != body.attempt:
            raise Conflict(
                f"task {task_id} is {task.status} at attempt {task.attempt}; result of attempt {body.attempt} ignored",
                details={"status": task.status, "attempt": task.attempt},
            )
        meta = dict(task.execution_metadata or {})
        meta.update(body.execution_metadata or {})
        now = utcnow()
        meta["endTime"] = now.isoformat()
        if "durationMs" not in (body.execution_metadata or {}) and meta.get("startTime"):
            start = parse_time(meta["startTime"])
            meta["durationMs"] = int((now - start).total_seconds() * 1000) if start else None
        has_logs = body.stdout is not None or body.stderr is not None
        logs: dict[str, Any] = {"stdout": body.stdout, "stderr": body.stderr} if has_logs else {}
        output = body.output
        error = body.error.model_dump() if body.error else None
        target = Status(body.status)
        if target is Status.COMPLETED:
            schema = self.get_definition(s, task.definition_id, task.definition_version).output_schema
            try:
                if schema:
                    validate_instance(schema, output, "output")
            except ValidationFailed as exc:
                target, output = Status.FAILED, None
                error = {"code": TaskErrorCode.OUTPUT_VALIDATION_ERROR.value, "message": exc.message,
                         "details": exc.details}
        dead = False
        if target in (Status.FAILED, Status.TIMED_OUT) and self.retryable(s, task, error, body.retry):
            delay = self.retry_delay(s, task, error)
            if delay is not None:
                meta["lastError"] = error
                task.execution_metadata = meta
                self._requeue(s, task, actor=worker, delay_s=delay, details={"error": error}, **logs)
                return task
            dead = True
            if error is not None and task.retry_count > 0:
                error = {"code": TaskErrorCode.MAX_RETRIES_EXCEEDED.value,
                         "message": f"gave up after {task.retry_count} retries: {error.get('message')}",
                         "details": {"lastError": error, "cause": error.get("code")}}
        self._move(s, task, target, actor=worker, output=output, error=error, execution_metadata=meta, **logs)
        if dead:
            record_dead_letter(s, task, self.settings.queues[TaskType(task.type)], error)
        return task

    def retryable(self, s: Session, task: TaskInstance, error: dict[str, Any] | None, requested: bool) -> bool:
        """May this failed (or timed-out) attempt be retried? For every task type the definition's
        `retryPolicy.retryableErrors` decides when it is given; without it the worker's own verdict
        (`requested`: our faults such as SANDBOX_ERROR, transient integration failures) does. Codes in
        NEVER_RETRIED are final whatever the policy says."""
        return retry_wanted(self.get_definition(s, task.definition_id, task.definition_version).retry_policy,
                            error, requested)

    def retry_delay(self, s: Session, task: TaskInstance, error: dict[str, Any] | None = None) -> float | None:
        """Seconds before the next retry, or None when retries are spent (docs/architecture.md). A
        `details.retryAfterMs` (e.g. a 429's Retry-After) is a floor on the delay."""
        policy = self.get_definition(s, task.definition_id, task.definition_version).retry_policy or {}
        if task.retry_count >= policy.get("maxRetries", DEFAULT_INFRA_RETRIES):
            return None
        delay = backoff_delay(policy, task.retry_count)
        details = (error or {}).get("details")
        floor = details.get("retryAfterMs") if isinstance(details, dict) else None
        if isinstance(floor, int | float) and floor > 0:
            delay = max(delay, min(float(floor) / 1000.0, MAX_RETRY_AFTER_S))
        return delay

    def defer(self, s: Session, task_id: str, attempt: int, delay_s: float, reason: str, actor: str) -> TaskInstance:
        """Put a RUNNING attempt back to PENDING for `delay_s` without counting a retry (rate limit);
        audited as `task.instance.deferred`, not sent to the orchestrator."""
        task = self.get_task(s, task_id, for_update=True)
        if task.status != Status.RUNNING.value or task.attempt != attempt:
            raise Conflict(f"task {task_id} is {task.status} at attempt {task.attempt}; cannot defer attempt {attempt}",
                           details={"status": task.status, "attempt": task.attempt})
        available = utcnow() + timedelta(seconds=max(0.0, delay_s))
        change_state(s, self.settings, task, Status.PENDING, actor=actor, audit_type=AuditEvent.DEFERRED,
                     details={"reason": reason, "nextAttemptAt": available.isoformat()},
                     dispatch_token=new_id(), enqueued_at=None, available_at=available, worker_id=None,
                     queue_deadline=self._queue_deadline(s, task, available))
        return task

    # ------------------------------------------------------------ helpers

    def _requeue(self, s: Session, task: TaskInstance, *, actor: str, delay_s: float, **fields: Any) -> None:
        now = utcnow()
        available = now + timedelta(seconds=delay_s)
        self._move(
            s, task, Status.PENDING, actor=actor, dispatch_token=new_id(), enqueued_at=None, available_at=available,
            queue_deadline=self._queue_deadline(s, task, available), retry_count=task.retry_count + 1,
            worker_id=None, output=None, error=None,
            extra={"nextAttemptAt": available.isoformat()},
            details={**(fields.pop("details", None) or {}), "nextAttemptAt": available.isoformat()}, **fields,
        )

    def _queue_deadline(self, s: Session, task: TaskInstance, ready_at: datetime) -> datetime:
        definition = self.get_definition(s, task.definition_id, task.definition_version)
        return queue_deadline(self.settings, ready_at, definition.execution_config, task.execution_config)

    def _move(self, s: Session, task: TaskInstance, target: Status, *, actor: str | None,
              extra: dict[str, Any] | None = None, details: dict[str, Any] | None = None,
              ip: str | None = None, user_agent: str | None = None, **changes: Any) -> None:
        change_state(s, self.settings, task, target, actor=actor, extra=extra, details=details, ip=ip,
                     user_agent=user_agent, **changes)


def trace_metadata() -> dict[str, str] | None:
    """The current request's ids, stored in a new task's executionMetadata (the pools read them back)."""
    trace = tracing.current()
    return {"requestId": trace.request_id, "traceparent": trace.traceparent} if trace else None


def _same_definition(row: TaskDefinition, body: DefinitionIn, config: dict[str, Any]) -> bool:
    """Whether `body` (with its normalised executionConfig) describes what `row` stores."""
    policy = body.retry_policy.model_dump(by_alias=True) if body.retry_policy else None
    return (row.name, row.description, row.type, row.input_schema, row.output_schema, row.timeout_ms,
            row.retry_policy, row.execution_config) == (
        body.name, body.description, body.type.value, body.input_schema, body.output_schema, body.timeout,
        policy, config)


def _search(text: str) -> Any:
    """A task id, its first characters (at least 4; hex and '-' only, so no LIKE wildcard), or a correlation id."""
    matches = [TaskInstance.id == text, TaskInstance.correlation_id == text]
    if len(text) >= 4 and all(c in "0123456789abcdef-" for c in text.lower()):
        matches.append(TaskInstance.id.like(text.lower() + "%"))
    return or_(*matches)


def backoff_delay(policy: dict[str, Any], n: int) -> float:
    """Seconds before retry `n` (from 0): `retryInterval * backoffMultiplier^n` ms, capped, with ±20% jitter."""
    base = policy.get("retryInterval", 1000) * policy.get("backoffMultiplier", 2.0) ** n
    cap = policy.get("maxRetryInterval")
    if cap is not None:
        base = min(base, cap)
    return max(0.0, base * random.uniform(0.8, 1.2) / 1000.0)


def _page(s: Session, stmt: Any, page: int, limit: int) -> tuple[list[Any], int]:
    total = s.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    items = list(s.scalars(stmt.offset((page - 1) * limit).limit(limit)))
    return items, total


def total_pages(total: int, limit: int) -> int:
    return math.ceil(total / limit) if total else 0


_MARK_ENQUEUED = (  # built once: one of these runs for every submitted task
    update(TaskInstance)
    .where(TaskInstance.id == bindparam("task_id"), TaskInstance.dispatch_token == bindparam("token"),
           TaskInstance.enqueued_at.is_(None))
    .values(enqueued_at=bindparam("now"))
    .execution_options(synchronize_session=False)
)


def mark_enqueued(s: Session | Connection, task_id: str, token: str) -> bool:
    """Note that the message for `token` reached the broker (no status change, no version bump)."""
    result = s.execute(_MARK_ENQUEUED, {"task_id": task_id, "token": token, "now": utcnow()})
    return bool(result.rowcount)  # type: ignore[attr-defined]
