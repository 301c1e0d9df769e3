"""Router-side task metrics, recorded from committed state changes.

A state-change hook (`taskexec.store.statechange.on_state_change`): every change of one task calls it with the
task and its audit event, the observations are computed at once (the task may change again before
commit) and emitted only once the transaction commits (a rolled-back change records nothing). The hot
paths (`taskexec.services.lifecycle`) compute the same `observations` for their batched rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session

from taskexec.core.constants import TERMINAL_STATUSES, Status, TaskType
from taskexec.observability import metrics
from taskexec.services.hotpath import TaskRow
from taskexec.store.models import TaskEvent, TaskInstance, parse_time
from taskexec.store.statechange import on_state_change

log = logging.getLogger(__name__)
_PENDING_KEY = "taskexec.services.task_metrics"
_installed = False
Observation = Callable[[], None]


class StateChange(Protocol):
    """What `observations` reads of a change: a `TaskEvent` row, or a `Change` of the hot paths."""

    @property
    def from_status(self) -> str | None: ...
    @property
    def to_status(self) -> str | None: ...
    @property
    def created_at(self) -> datetime | None: ...


class Change(NamedTuple):
    """A change the hot paths store with plain INSERTs (building an ORM `TaskEvent` for it cost ~0.1 ms)."""

    from_status: str | None
    to_status: str | None
    created_at: datetime | None


def install() -> None:
    """Register the hook and attach the commit/rollback listeners to every SQLAlchemy session (idempotent)."""
    global _installed
    if _installed:
        return
    on_state_change(_collect)
    event.listen(Session, "after_commit", _emit)
    event.listen(Session, "after_rollback", _discard)
    _installed = True


def _collect(session: Session, task: TaskInstance, evt: TaskEvent) -> None:
    if evt.to_status:
        session.info.setdefault(_PENDING_KEY, []).extend(observations(evt, task))


def _emit(session: Session) -> None:
    for observe in session.info.pop(_PENDING_KEY, []):
        try:
            observe()
        except Exception:
            log.exception("task metrics: recording failed")


def _discard(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def observations(evt: StateChange, task: TaskInstance | TaskRow) -> list[Observation]:
    """What a state change means for the metrics, computed now (the task may change again before commit)."""
    source = Status(evt.from_status) if evt.from_status else None
    target = Status(evt.to_status or "")
    at = evt.created_at or datetime.now(UTC)
    kind, definition = task.type, task.definition_id
    out: list[Observation] = []
    if source is None and target is Status.PENDING:
        out.append(lambda: metrics.child(metrics.TASKS_SUBMITTED, type=kind, definition=definition).inc())
    if source is Status.PENDING and target in (Status.RUNNING, Status.ASSIGNED):
        ready = task.created_at if not task.retry_count else task.available_at
        if ready is not None:
            waited = max(0.0, (at - ready).total_seconds())
            out.append(lambda: metrics.child(metrics.TASK_QUEUE_TIME, type=kind).observe(waited))
    if source is not None and source is not target and (target in TERMINAL_STATUSES or target is Status.PENDING):
        started = _started(task, source)
        if started is not None:
            ran = max(0.0, (at - started).total_seconds())
            out.append(lambda: metrics.child(metrics.TASK_EXECUTION_TIME, type=kind,
                                             definition=definition).observe(ran))
    if target in TERMINAL_STATUSES and source is not target:
        status = target.value
        out.append(lambda: metrics.child(metrics.TASKS_FINISHED, type=kind, definition=definition, status=status).inc())
    if source is Status.PENDING and target is Status.TIMED_OUT:
        queue = str(((task.error or {}).get("details") or {}).get("queue") or "")
        out.append(lambda: metrics.child(metrics.TASK_QUEUE_TIMEOUTS, type=kind, queue=queue).inc())
    if target is Status.PENDING and source in (Status.RUNNING, Status.FAILED, Status.TIMED_OUT):
        out.append(lambda: metrics.child(metrics.TASK_RETRIES, type=kind, definition=definition).inc())
    return out


def _started(task: TaskInstance | TaskRow, source: Status) -> datetime | None:
    """When the attempt that just ended began: RUNNING since `startTime`; a manual task since its claim."""
    if source is Status.RUNNING:
        return parse_time((task.execution_metadata or {}).get("startTime"))
    if source is Status.ASSIGNED and task.type == TaskType.MANUAL.value:
        return task.claimed_at
    return None

