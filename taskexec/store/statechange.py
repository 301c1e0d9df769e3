"""One call for a task's state change: the guarded transition with its audit event, the outbox event for
the orchestrator (and the task's callback), and the state-change hooks (the router's metrics).

Every path that changes one task at a time (API, internal API, sweeps, escalations, re-drives, recovery)
calls `change_state` (or `record_created` for a new task), so the audit trail, the outbox and the
metrics cannot drift apart. The router's hot paths (`taskexec.services.lifecycle`) change many rows per statement
by design; they write the same event names (`event_type_for`, `EventType`) and compute the same metric
observations (`taskexec.services.task_metrics.observations`) for their rows.

Hooks are plain callbacks registered with `on_state_change` (like a Celery signal): called inside the
caller's transaction, right after the change, with the session, the task and its audit event. A hook
must not fail the change: an exception is logged and swallowed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from taskexec.core.config import Settings
from taskexec.core.constants import AuditEvent, EventType, Status
from taskexec.store.events import enqueue_event
from taskexec.store.models import TaskEvent, TaskInstance, utcnow
from taskexec.store.statemachine import event_type_for, transition

log = logging.getLogger(__name__)

StateHook = Callable[[Session, TaskInstance, TaskEvent], None]
_HOOKS: list[StateHook] = []
_AUDIT_ONLY = frozenset(e.value for e in AuditEvent)


def on_state_change(hook: StateHook) -> StateHook:
    """Register `hook` for every state change (idempotent); usable as a decorator."""
    if hook not in _HOOKS:
        _HOOKS.append(hook)
    return hook


def disconnect(hook: StateHook) -> None:
    """Unregister `hook` (tests, shutdown)."""
    if hook in _HOOKS:
        _HOOKS.remove(hook)


def change_state(
    session: Session,
    settings: Settings,
    task: TaskInstance,
    target: Status,
    *,
    actor: str | None,
    audit_type: AuditEvent | EventType | None = None,
    outbox_type: EventType | None = None,
    extra: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    **changes: Any,
) -> TaskEvent:
    """Move `task` to `target` (applying `changes`) and record it everywhere it must be recorded.

    The audit event is `audit_type`, else the transition's own `EventType`. The outbox event is
    `outbox_type`, else the audit event when that is an orchestrator event: an audit-only change
    (`AuditEvent`, e.g. a rate-limit deferral) is not announced. `extra` is merged into the outbox
    event's `data`. Raises what `statemachine.transition` raises (InvalidTransition, StaleVersion).
    """
    evt = transition(session, task, target, actor=actor, event_type=audit_type.value if audit_type else None,
                     details=details, ip=ip, user_agent=user_agent, **changes)
    announced = outbox_type.value if outbox_type else None if evt.type in _AUDIT_ONLY else evt.type
    if announced:
        enqueue_event(session, settings, task, announced, extra)
    _notify(session, task, evt)
    return evt


def record_created(session: Session, settings: Settings, task: TaskInstance, actor: str | None,
                   at: datetime | None = None) -> TaskEvent:
    """A new task (already added to `session`): its `task.instance.created` audit and outbox events, hooks."""
    evt = TaskEvent(task_id=task.id, type=EventType.CREATED.value, to_status=Status.PENDING.value, actor=actor,
                    created_at=at or utcnow())
    session.add(evt)
    enqueue_event(session, settings, task, event_type_for(Status.PENDING, Status.PENDING).value)
    _notify(session, task, evt)
    return evt


def _notify(session: Session, task: TaskInstance, evt: TaskEvent) -> None:
    for hook in list(_HOOKS):
        try:
            hook(session, task, evt)
        except Exception:  # a hook (metrics) must never break a state change
            log.exception("state-change hook failed", extra={"taskId": task.id, "hook": getattr(hook, "__name__", "")})
