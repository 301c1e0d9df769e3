"""Router-side task metrics, recorded from committed state changes.

A hook on SQLAlchemy sessions: every status change writes a `TaskEvent` (see `taskexec.statemachine`),
so after a flush the new events are read together with their task, and the observations are emitted
only once the transaction commits (a rolled-back change records nothing). Every path that changes a
task (API, internal API, sweeps, escalations, recovery) is covered without a call at each site.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from taskexec import metrics
from taskexec.constants import TERMINAL_STATUSES, Status, TaskType
from taskexec.hotpath import TaskRow
from taskexec.models import TaskEvent, TaskInstance, parse_time
from taskexec.statemachine import CHANGED_TASKS

log = logging.getLogger(__name__)
_PENDING_KEY = "taskexec.task_metrics"
_installed = False
Observation = Callable[[], None]


def install() -> None:
    """Attach the hook to every SQLAlchemy session (idempotent)."""
    global _installed
    if _installed:
        return
    event.listen(Session, "after_flush", _collect)
    event.listen(Session, "after_commit", _emit)
    event.listen(Session, "after_rollback", _discard)
    _installed = True


def _collect(session: Session, _flush_context: Any) -> None:
    for obj in list(session.new):
        if not isinstance(obj, TaskEvent) or not obj.to_status:
            continue
        task = (session.info.get(CHANGED_TASKS, {}).get(obj.task_id)
                or session.identity_map.get(identity_key(TaskInstance, obj.task_id)))
        if task is None:
            continue
        try:
            session.info.setdefault(_PENDING_KEY, []).extend(observations(obj, task))
        except Exception:  # metrics must never break a state change
            log.exception("task metrics: observation failed", extra={"taskId": obj.task_id})


def _emit(session: Session) -> None:
    session.info.pop(CHANGED_TASKS, None)
    for observe in session.info.pop(_PENDING_KEY, []):
        try:
            observe()
        except Exception:
            log.exception("task metrics: recording failed")


def _discard(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)
    session.info.pop(CHANGED_TASKS, None)


def observations(evt: TaskEvent, task: TaskInstance | TaskRow) -> list[Observation]:
    """What a state change means for the metrics, computed now (the task may change again before commit)."""
    source = Status(evt.from_status) if evt.from_status else None
    target = Status(evt.to_status or "")
    at = evt.created_at or datetime.now(UTC)
    kind, definition = task.type, task.definition_id
    out: list[Observation] = []
    if source is None and target is Status.PENDING:
        out.append(lambda: metrics.TASKS_SUBMITTED.labels(type=kind, definition=definition).inc())
    if source is Status.PENDING and target in (Status.RUNNING, Status.ASSIGNED):
        ready = task.created_at if not task.retry_count else task.available_at
        if ready is not None:
            waited = max(0.0, (at - ready).total_seconds())
            out.append(lambda: metrics.TASK_QUEUE_TIME.labels(type=kind).observe(waited))
    if source is not None and source is not target and (target in TERMINAL_STATUSES or target is Status.PENDING):
        started = _started(task, source)
        if started is not None:
            ran = max(0.0, (at - started).total_seconds())
            out.append(lambda: metrics.TASK_EXECUTION_TIME.labels(type=kind, definition=definition).observe(ran))
    if target in TERMINAL_STATUSES and source is not target:
        status = target.value
        out.append(lambda: metrics.TASKS_FINISHED.labels(type=kind, definition=definition, status=status).inc())
    if source is Status.PENDING and target is Status.TIMED_OUT:
        queue = str(((task.error or {}).get("details") or {}).get("queue") or "")
        out.append(lambda: metrics.TASK_QUEUE_TIMEOUTS.labels(type=kind, queue=queue).inc())
    if target is Status.PENDING and source in (Status.RUNNING, Status.FAILED, Status.TIMED_OUT):
        out.append(lambda: metrics.TASK_RETRIES.labels(type=kind, definition=definition).inc())
    return out


def _started(task: TaskInstance | TaskRow, source: Status) -> datetime | None:
    """When the attempt that just ended began: RUNNING since `startTime`; a manual task since its claim."""
    if source is Status.RUNNING:
        return parse_time((task.execution_metadata or {}).get("startTime"))
    if source is Status.ASSIGNED and task.type == TaskType.MANUAL.value:
        return task.claimed_at
    return None

