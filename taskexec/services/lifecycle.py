"""Submit, start and finish as the router serves them: the hot paths first, the ORM for everything else.

`Lifecycle` decides per report. The common case goes through `taskexec.services.hotpath` (few Core statements,
and one statement for many reports of the same kind); whatever it does not cover (a replayed
Idempotency-Key, a redelivered or stale message, a retry, an output that fails its schema) is
answered by `TaskManager`, whose rules stay the reference. Both write the same rows (the task, its
audit event, its outbox rows) and record the same metrics once committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from taskexec.contract.protocol import FinishIn, StartIn, StartOut, TaskStateOut
from taskexec.contract.schemas import SubmitIn
from taskexec.contract.validation import validate_execution_config, validate_instance
from taskexec.core.constants import EventType, Status, TaskType
from taskexec.core.exceptions import Conflict, NotFound, TaskexecError, ValidationFailed
from taskexec.core.limits import queue_deadline
from taskexec.services import hotpath
from taskexec.services.callbacks import check_submitted
from taskexec.services.hotpath import TaskRow
from taskexec.services.manager import (
    PUBLISH_GRACE,
    PUBLISH_GRACE_PER_TASK,
    TaskManager,
    retry_wanted,
    trace_metadata,
)
from taskexec.services.task_metrics import Change, Observation, observations
from taskexec.store.auth import Principal
from taskexec.store.db import Database
from taskexec.store.events import outbox_rows
from taskexec.store.models import TaskDefinition, TaskInstance, new_id, utcnow
from taskexec.store.statemachine import event_type_for
from taskexec.store.taskstore import LATEST_DEFINITION

log = logging.getLogger(__name__)
_LATEST_VERSION = LATEST_DEFINITION.with_only_columns(TaskDefinition.version)
# Tries of a submission whose key or definition version changed under it before it is refused (409).
RACE_TRIES = 3


@dataclass
class Accepted:
    """A submission the router stored (created) or found under its Idempotency-Key (a replay)."""

    id: str
    status: str
    created_at: datetime
    created: bool
    type: str = ""
    priority: str = ""
    dispatch_token: str = ""


@dataclass
class _New:
    """One submission about to be stored."""

    index: int
    row: dict[str, Any]
    event: dict[str, Any]
    outbox: list[dict[str, Any]]
    observe: list[Observation]


Outcome = StartOut | TaskStateOut | TaskexecError


class Lifecycle:
    """The router's submit / start / finish; see the module docstring."""

    def __init__(self, manager: TaskManager, db: Database) -> None:
        self.manager = manager
        self.settings = manager.settings
        self.db = db
        self.fast = True  # False: every report through TaskManager, the reference the hot paths must match
        self._latest: dict[str, Any] = {}  # definition id -> latest version seen (checked when stored)

    # ------------------------------------------------------------ submit

    def submit(self, items: Sequence[tuple[SubmitIn, str | None]],
               principal: Principal) -> list[Accepted | TaskexecError]:
        """Store each valid submission (with its Idempotency-Key, or None); one result per item, in order."""
        if not self.fast:
            return [self._submit_orm(body, key, principal) for body, key in items]
        results: list[Accepted | TaskexecError | None] = [None] * len(items)
        keyed: set[str] = set()
        fresh: list[_New] = []
        # A batch is stored without a version check per row: read each definition's latest version once now.
        refreshed: set[str] | None = set() if len(items) > 1 else None
        grace = PUBLISH_GRACE + PUBLISH_GRACE_PER_TASK * (len(items) - 1)  # until the dispatcher may publish them
        for i, (body, key) in enumerate(items):
            scoped = f"{principal.sub}:{key}" if key else None
            if scoped is not None and scoped in keyed:
                continue  # the same key twice in one batch: answered below as a replay of the first
            try:
                fresh.append(self._prepare(i, body, scoped, principal, utcnow(), refreshed, grace))
            except TaskexecError as exc:
                results[i] = exc
                continue
            if scoped is not None:
                keyed.add(scoped)
        for _ in range(RACE_TRIES):
            fresh = self._replays(items, fresh, results)
            try:
                stored = self._insert(fresh)
            except IntegrityError:
                if not any(n.row["idempotency_key"] for n in fresh):
                    raise
                continue  # another request stored one of these keys meanwhile: replay it, store the rest
            if not stored:  # a newer definition version was registered meanwhile: validate against it
                self._latest.pop(fresh[0].row["definition_id"], None)
                n = fresh[0]
                try:
                    fresh = [self._prepare(n.index, items[n.index][0], n.row["idempotency_key"], principal,
                                           utcnow(), set(), grace)]
                except TaskexecError as exc:
                    results[n.index] = exc
                    fresh = []
                continue
            for n in fresh:
                results[n.index] = Accepted(n.row["id"], Status.PENDING.value, n.row["created_at"], True,
                                            n.row["type"], n.row["priority"], n.row["dispatch_token"])
                _emit(n.observe)
            fresh = []
            break
        for n in fresh:
            results[n.index] = Conflict("the definition or Idempotency-Key changed repeatedly meanwhile: try again")
        for i, (body, key) in enumerate(items):  # later duplicates of a key within this batch
            if results[i] is None:
                results[i] = self._submit_orm(body, key, principal)
        return [r for r in results if r is not None]

    def _prepare(self, index: int, body: SubmitIn, scoped: str | None, principal: Principal, now: datetime,
                 refreshed: set[str] | None, grace: timedelta) -> _New:
        """Validate one submission against the latest version of its definition; its rows (not stored yet).

        The version comes from this process's memory (storing one task checks it is still the latest), or,
        with `refreshed` (the ids read in this request), from the database once per request."""
        def_id = body.task_definition_id
        if def_id not in self._latest or (refreshed is not None and def_id not in refreshed):
            if refreshed is not None:
                refreshed.add(def_id)
            with self.db.autocommit() as conn:
                version = conn.execute(_LATEST_VERSION, {"def_id": def_id}).scalar()
            if version is None:
                self._latest.pop(def_id, None)
                raise NotFound(f"task definition {def_id!r} not found", details={"field": "taskDefinitionId"})
            self._latest[def_id] = version
        definition = self.manager.cached_definition(def_id, self._latest[def_id])
        check_submitted(body.callback_url, self.settings.callback_allowed)
        validate_instance(definition.input_schema, body.input, "input")
        config = None
        if body.execution_config:
            merged = {**definition.execution_config, **body.execution_config}
            config = validate_execution_config(TaskType(definition.type), merged, self.settings)
        row = {
            "id": new_id(), "definition_id": definition.id, "definition_version": definition.version,
            "type": definition.type, "status": Status.PENDING.value, "priority": body.priority.value,
            "input": body.input, "workflow_instance_id": body.workflow_instance_id,
            "correlation_id": body.correlation_id or body.workflow_instance_id, "callback_url": body.callback_url,
            "execution_config": config, "idempotency_key": scoped, "created_by": principal.sub,
            "dispatch_token": new_id(), "available_at": now + grace,
            "queue_deadline": queue_deadline(self.settings, now, definition.execution_config, config),
            # the submitting request's ids travel with the task to the pools' logs and calls
            # (taskexec.observability.tracing)
            "execution_metadata": trace_metadata(), "retry_count": 0, "attempt": 0,
            "version": 1, "created_at": now, "updated_at": now,
        }
        task = _task_row(row)
        event = _event(task.id, None, Status.PENDING, principal.sub, now)
        kind = event_type_for(Status.PENDING, Status.PENDING).value
        return _New(index, row, event, outbox_rows(self.settings, task, kind, at=now),
                    observations(_change(event), task))

    def _replays(self, items: Sequence[tuple[SubmitIn, str | None]], fresh: list[_New],
                 results: list[Accepted | TaskexecError | None]) -> list[_New]:
        """Answer the items whose key is already stored (a replay, or 422 for another body); the rest."""
        keys = [n.row["idempotency_key"] for n in fresh if n.row["idempotency_key"]]
        if not keys:
            return fresh
        with self.db.session() as s:
            stored = {t.idempotency_key: t for t in s.scalars(
                select(TaskInstance).where(TaskInstance.idempotency_key.in_(keys)))}
            rest = []
            for n in fresh:
                existing = stored.get(n.row["idempotency_key"])
                if existing is None:
                    rest.append(n)
                    continue
                try:
                    self.manager._replay(s, existing, items[n.index][0])
                    results[n.index] = _accepted(existing, created=False)
                except TaskexecError as exc:
                    results[n.index] = exc
        return rest

    def _insert(self, fresh: list[_New]) -> bool:
        """Store the prepared tasks; False when a single task's definition version is no longer the latest."""
        if len(fresh) == 1:  # one statement: no transaction round trips
            with self.db.autocommit() as conn:
                return hotpath.insert_one(conn, fresh[0].row, fresh[0].event, fresh[0].outbox)
        if fresh:  # versions were read for this batch just now
            with self.db.transaction() as conn:
                hotpath.insert_many(conn, [n.row for n in fresh], [n.event for n in fresh],
                                    [o for n in fresh for o in n.outbox])
        return True

    def _submit_orm(self, body: SubmitIn, key: str | None, principal: Principal) -> Accepted | TaskexecError:
        try:
            with self.db.session() as s:
                task, created = self.manager.submit(s, body, principal, key)
                return _accepted(task, created)
        except TaskexecError as exc:
            return exc

    # ------------------------------------------------------------ start

    def start(self, task_id: str, body: StartIn) -> StartOut:
        [out] = self.start_many([(task_id, body)])
        if isinstance(out, TaskexecError):
            raise out
        return out

    def start_many(self, reports: Sequence[tuple[str, StartIn]]) -> list[StartOut | TaskexecError]:
        """May these deliveries run? The job for each that does (`TaskManager.start` for every other case)."""
        done: dict[int, TaskRow] = {}
        if self.fast:
            now = utcnow()
            starts = [hotpath.Start(task_id, b.dispatch_token, b.worker_id, _start_meta(b, now))
                      for task_id, b in reports]
            with self.db.transaction() as conn:
                done = hotpath.start(conn, starts, now)
                observe = self._record(conn, [(row, Status.PENDING, f"worker:{starts[i].worker}")
                                              for i, row in done.items()], now)
            _emit(observe)
        out: list[StartOut | TaskexecError] = []
        for i, (task_id, body) in enumerate(reports):
            if i in done:
                out.append(StartOut(job=self.manager.job(None, done[i], None)))
                continue
            try:
                with self.db.session() as s:
                    out.append(self.manager.start(s, task_id, body.dispatch_token, body.worker_id, body.start_id))
            except TaskexecError as exc:
                out.append(exc)
        return out

    # ------------------------------------------------------------ finish

    def finish(self, task_id: str, body: FinishIn, actor: str) -> TaskStateOut:
        [out] = self.finish_many([(task_id, body)], actor)
        if isinstance(out, TaskexecError):
            raise out
        return out

    def finish_many(self, reports: Sequence[tuple[str, FinishIn]], actor: str) -> list[TaskStateOut | TaskexecError]:
        """Record attempts' results (a retry, a failed output check, every conflict: `TaskManager.finish`)."""
        done: dict[int, TaskRow] = {}
        fast = [i for i, (_, b) in enumerate(reports) if not (b.status == Status.FAILED.value and b.retry)]
        if self.fast and fast:
            now = utcnow()
            finishes = [_finish(reports[i][0], reports[i][1], now) for i in fast]
            try:
                with self.db.transaction() as conn:
                    rows = hotpath.finish(conn, finishes, now)
                    if any(not self._final_ok(row, reports[fast[j]][1]) for j, row in rows.items()):
                        # rolled back: the ORM path records OUTPUT_VALIDATION_ERROR, or the retry
                        raise _OutputInvalid()
                    observe = self._record(conn, [(row, Status.RUNNING, actor) for row in rows.values()], now)
                done = {fast[j]: row for j, row in rows.items()}
                _emit(observe)
            except _OutputInvalid:
                done = {}
        out: list[TaskStateOut | TaskexecError] = []
        for i, (task_id, body) in enumerate(reports):
            if i in done:
                row = done[i]
                out.append(TaskStateOut(id=row.id, status=Status(row.status), retry_count=row.retry_count))
                continue
            try:
                with self.db.session() as s:
                    task = self.manager.finish(s, task_id, body, actor)
                    out.append(TaskStateOut(id=task.id, status=Status(task.status), retry_count=task.retry_count))
            except TaskexecError as exc:
                out.append(exc)
        return out

    def _final_ok(self, row: TaskRow, report: FinishIn) -> bool:
        """May the hot path's result stand? Not when the output fails its schema, nor when the definition's
        retry policy wants another attempt of a failure (both are `TaskManager.finish`'s to record)."""
        if row.status in (Status.FAILED.value, Status.TIMED_OUT.value):
            policy = self.manager.cached_definition(row.definition_id, row.definition_version).retry_policy
            return not retry_wanted(policy, row.error, report.retry)
        if row.status != Status.COMPLETED.value:
            return True
        schema = self.manager.cached_definition(row.definition_id, row.definition_version).output_schema
        if not schema:
            return True
        try:
            validate_instance(schema, row.output, "output")
        except ValidationFailed:
            return False
        return True

    # ------------------------------------------------------------ shared

    def _record(self, conn: Connection, changes: Sequence[tuple[TaskRow, Status, str]],
                now: datetime) -> list[Observation]:
        """Audit events and outbox rows of changes (task, from status, actor); their metrics, for after commit."""
        if not changes:
            return []
        events, outbox, observe = [], [], []
        for row, source, actor in changes:
            target = Status(row.status)
            event = _event(row.id, source, target, actor, now)
            events.append(event)
            outbox += outbox_rows(self.settings, row, event_type_for(source, target).value, at=now)
            observe += observations(_change(event), row)
        hotpath.record(conn, events, outbox)
        return observe


class _OutputInvalid(Exception):
    """An attempt's output fails the definition's outputSchema: leave the batch to `TaskManager.finish`."""


def _start_meta(body: StartIn, now: datetime) -> dict[str, Any]:
    meta = {"startTime": now.isoformat(), "workerId": body.worker_id}
    if body.start_id:
        meta["startId"] = body.start_id
    return meta


def _finish(task_id: str, body: FinishIn, now: datetime) -> hotpath.Finish:
    return hotpath.Finish(task_id=task_id, attempt=body.attempt, target=body.status, output=body.output,
                          error=body.error.model_dump() if body.error else None,
                          meta={**(body.execution_metadata or {}), "endTime": now.isoformat()},
                          logs=body.stdout is not None or body.stderr is not None, stdout=body.stdout,
                          stderr=body.stderr)


def _change(event: dict[str, Any]) -> Change:
    return Change(event["from_status"], event["to_status"], event["created_at"])


def _event(task_id: str, source: Status | None, target: Status, actor: str, now: datetime) -> dict[str, Any]:
    kind = EventType.CREATED.value if source is None else event_type_for(source, target).value
    return {"task_id": task_id, "type": kind, "from_status": source.value if source else None,
            "to_status": target.value, "actor": actor, "details": None, "created_at": now}


def _task_row(row: dict[str, Any]) -> TaskRow:
    return TaskRow(id=row["id"], type=row["type"], status=row["status"], priority=row["priority"],
                   input=row["input"], output=None, error=None, workflow_instance_id=row["workflow_instance_id"],
                   correlation_id=row["correlation_id"], definition_id=row["definition_id"],
                   definition_version=row["definition_version"], execution_config=row["execution_config"],
                   retry_count=0, attempt=0, dispatch_token=row["dispatch_token"], created_at=row["created_at"],
                   available_at=row["available_at"], callback_url=row["callback_url"],
                   execution_metadata=row["execution_metadata"],
                   claimed_at=None)


def _accepted(task: TaskInstance, created: bool) -> Accepted:
    return Accepted(task.id, task.status, task.created_at, created, task.type, task.priority,
                    task.dispatch_token or "")


def _emit(observe: list[Callable[[], None]]) -> None:
    for fn in observe:
        try:
            fn()
        except Exception:  # metrics never fail a request
            log.exception("task metrics: recording failed")
