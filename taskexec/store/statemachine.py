"""The one place where task status changes happen: allowed transitions plus an optimistic version check."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Update, bindparam, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from taskexec.core.constants import STATUS_EVENT, EventType, Status
from taskexec.core.exceptions import InvalidTransition, StaleVersion
from taskexec.store.models import TaskEvent, TaskInstance, utcnow

S = Status
ALLOWED: dict[Status, frozenset[Status]] = {
    S.PENDING: frozenset({S.PENDING, S.ASSIGNED, S.RUNNING, S.CANCELLED, S.FAILED, S.TIMED_OUT}),
    S.ASSIGNED: frozenset({S.ASSIGNED, S.RUNNING, S.COMPLETED, S.CANCELLED, S.FAILED, S.TIMED_OUT}),
    S.RUNNING: frozenset({S.RUNNING, S.PENDING, S.ASSIGNED, S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMED_OUT}),
    S.FAILED: frozenset({S.PENDING}),
    S.TIMED_OUT: frozenset({S.PENDING}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
}


@functools.lru_cache(maxsize=128)
def _update_for(columns: tuple[str, ...]) -> Update:
    """The guarded UPDATE of these columns, built once per column set: building and cache-keying it
    (with the values inline) cost more CPU than running it."""
    return (
        update(TaskInstance)
        .where(TaskInstance.id == bindparam("_id"), TaskInstance.version == bindparam("_version"))
        .values({column: bindparam(f"v_{column}") for column in columns})
        .execution_options(synchronize_session=False)
    )


def can_transition(current: Status | str, target: Status | str) -> bool:
    return Status(target) in ALLOWED[Status(current)]


def event_type_for(current: Status, target: Status) -> EventType:
    """The orchestrator event a change emits (a RUNNING/FAILED task going back to PENDING is a retry)."""
    if target is Status.PENDING and current is not Status.PENDING:
        return EventType.RETRY
    return STATUS_EVENT[target]


def transition(
    session: Session,
    task: TaskInstance,
    target: Status,
    *,
    actor: str | None = None,
    event_type: str | None = None,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    **changes: Any,
) -> TaskEvent:
    """Move `task` to `target`, applying `changes`, iff nobody else changed it since it was read.

    Raises InvalidTransition when the state machine forbids it and StaleVersion when another
    writer won. Records the audit event only: callers use `taskexec.store.statechange.change_state`, which
    adds the outbox event and runs the state-change hooks.
    """
    current = Status(task.status)
    if not can_transition(current, target):
        raise InvalidTransition(
            f"task {task.id} is {current.value}; cannot move to {target.value}",
            details={"status": current.value, "target": target.value},
        )
    now = utcnow()
    values = {"status": target.value, "version": task.version + 1, "updated_at": now, **changes}
    result = session.execute(_update_for(tuple(values)), {"_id": task.id, "_version": task.version,
                                                          **{f"v_{k}": v for k, v in values.items()}})
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleVersion(f"task {task.id} was changed concurrently; retry", details={"version": task.version})
    for key, value in values.items():
        set_committed_value(task, key, value)
    evt = TaskEvent(
        task_id=task.id,
        type=event_type or event_type_for(current, target).value,
        from_status=current.value,
        to_status=target.value,
        actor=actor,
        ip=ip,
        user_agent=user_agent,
        details=details,
        created_at=now,
    )
    session.add(evt)
    return evt
