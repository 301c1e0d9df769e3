"""Deadlines of manual tasks: reminders at fractions of the deadline, escalation once it passes.

Timers are due times in the database, driven by the `reminders` and `escalations` beat sweeps (never
long Celery ETAs), so they survive restarts of every process:
* `due_date` is the deadline; `escalated_at` marks a task already escalated (escalation happens once);
* `reminders_sent` lists the fractions already reminded;
* for an ASSIGNED manual task, `available_at` holds its next reminder time (for PENDING tasks the same
  column means "publish not before"; dispatch only looks at PENDING tasks, so the uses never overlap).
Rows are taken with `FOR UPDATE SKIP LOCKED`, so several routers can sweep at once without doubling up.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from taskexec.contract.validation import schema_errors
from taskexec.core.constants import AuditEvent, EventType, Status, TaskType
from taskexec.people.assignment import DEFAULT_DEADLINE_S, _fill
from taskexec.people.notifications import ROLE_PREFIX, NotificationType, current_recipients, notify, unique
from taskexec.store.db import Database
from taskexec.store.models import TaskDefinition, TaskEvent, TaskInstance, utcnow
from taskexec.store.statechange import change_state
from taskexec.store.taskstore import TaskStore

log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.5, 0.75, 0.9)
ESCALATION_ACTOR = "system:escalation"
NOTIFY_MANAGER, REASSIGN, AUTO_COMPLETE = "NOTIFY_MANAGER", "REASSIGN", "AUTO_COMPLETE"
DEFAULT_MANAGER = ROLE_PREFIX + "manager"


def task_config(manager: TaskStore, s: Session, task: TaskInstance) -> tuple[TaskDefinition, dict[str, Any]]:
    """The task's definition version and its executionConfig merged with the task's own overrides."""
    definition = manager.get_definition(s, task.definition_id, task.definition_version)
    return definition, {**definition.execution_config, **(task.execution_config or {})}


def thresholds(config: dict[str, Any]) -> list[float]:
    raw = config.get("reminderThresholds")
    return sorted(float(f) for f in (DEFAULT_THRESHOLDS if raw is None else raw))


def _deadline(config: dict[str, Any]) -> timedelta:
    return timedelta(seconds=config.get("deadlineSeconds") or DEFAULT_DEADLINE_S)


def reminder_times(task: TaskInstance, config: dict[str, Any]) -> list[tuple[float, datetime]]:
    """(fraction, when) for every reminder not sent yet."""
    if task.due_date is None:
        return []
    span = _deadline(config)
    start = task.due_date - span
    sent = set(task.reminders_sent or [])
    return [(f, start + span * f) for f in thresholds(config) if f not in sent]


def next_timer(task: TaskInstance, config: dict[str, Any]) -> datetime:
    """When the sweeps next need to look at this task: its next reminder, else its deadline."""
    times = [when for _, when in reminder_times(task, config)]
    return min(times) if times else (task.due_date or utcnow())


def output_errors(schema: dict[str, Any], output: Any) -> list[dict[str, str]]:
    """Every place `output` fails `schema` (formats included), with paths like `output.score`."""
    return schema_errors(schema, output, "output")


class TimerSweeps:
    """The `reminders` and `escalations` sweeps, run by the router when the beat asks."""

    def __init__(self, manager: TaskStore, db: Database) -> None:
        self.manager = manager
        self.settings = manager.settings
        self.db = db

    def _due(self, s: Session, *where: Any, batch: int) -> list[TaskInstance]:
        stmt = (select(TaskInstance)
                .where(TaskInstance.type == TaskType.MANUAL.value, TaskInstance.status == Status.ASSIGNED.value,
                       TaskInstance.escalated_at.is_(None), TaskInstance.due_date.is_not(None), *where)
                .order_by(TaskInstance.due_date).limit(batch).with_for_update(skip_locked=True))
        return list(s.scalars(stmt))

    def reminders(self, batch: int = 200) -> int:
        """Send the reminders that are due; several overdue thresholds collapse into one reminder."""
        sent = 0
        now = utcnow()
        with self.db.session() as s:
            for task in self._due(s, TaskInstance.due_date > now, TaskInstance.available_at <= now, batch=batch):
                definition, config = task_config(self.manager, s, task)
                due = [f for f, when in reminder_times(task, config) if when <= now]
                if due:
                    task.reminders_sent = sorted({*(task.reminders_sent or []), *due})
                    notify(s, self.settings, task, NotificationType.REMINDER, current_recipients(task),
                           definition.name)
                    s.add(TaskEvent(task_id=task.id, type=AuditEvent.REMINDER_SENT.value, actor=ESCALATION_ACTOR,
                                    created_at=now, details={"thresholds": due, "recipients": current_recipients(task),
                                                             "dueDate": str(task.due_date)}))
                    sent += 1
                task.available_at = next_timer(task, config)
        return sent

    def escalations(self, batch: int = 100) -> int:
        """Escalate open tasks past their deadline, once each, with the definition's action."""
        count = 0
        with self.db.session() as s:
            for task in self._due(s, TaskInstance.due_date <= utcnow(), batch=batch):
                try:
                    with s.begin_nested():
                        self._escalate(s, task)
                    count += 1
                except Exception:
                    log.exception("escalation failed", extra={"taskId": task.id})
        return count

    def _escalate(self, s: Session, task: TaskInstance) -> None:
        definition, config = task_config(self.manager, s, task)
        spec = config.get("escalation") or {}
        action = spec.get("action") or NOTIFY_MANAGER
        holders = current_recipients(task)
        now = utcnow()
        details: dict[str, Any] = {"action": action, "dueDate": task.due_date.isoformat() if task.due_date else None,
                                   "holders": holders}
        output = spec.get("output")
        target = _fill(str(spec.get("to") or ""), task.input).strip() if action == REASSIGN else ""
        problem = (output_errors(definition.output_schema or {}, output) if action == AUTO_COMPLETE
                   else "escalation.to names no one" if action == REASSIGN and not target else None)
        if problem:  # a broken escalation still tells a manager instead of failing on every sweep
            details.update({"fallback": NOTIFY_MANAGER, "problem": problem})
            action = NOTIFY_MANAGER
        if action == AUTO_COMPLETE:
            s.add(TaskEvent(task_id=task.id, type=AuditEvent.ESCALATED.value, actor=ESCALATION_ACTOR,
                            created_at=now, details=details))
            meta = {**(task.execution_metadata or {}), "endTime": now.isoformat(), "completedBy": ESCALATION_ACTOR}
            change_state(s, self.settings, task, Status.COMPLETED, actor=ESCALATION_ACTOR, output=output,
                         completed_by=ESCALATION_ACTOR, escalated_at=now, execution_metadata=meta,
                         details={"escalation": AUTO_COMPLETE},
                         extra={"completedBy": ESCALATION_ACTOR, "escalated": True})
            notify(s, self.settings, task, NotificationType.ESCALATION, holders, definition.name)
            notify(s, self.settings, task, NotificationType.COMPLETION, [task.created_by, *holders], definition.name)
            return
        if action == REASSIGN:
            role = target[len(ROLE_PREFIX):] if target.startswith(ROLE_PREFIX) else None
            changes = ({"assignee": None, "candidate_roles": [role], "candidate_users": []} if role
                       else {"assignee": target})
            details.update({"from": task.assignee, "to": target})
            change_state(s, self.settings, task, Status.ASSIGNED, actor=ESCALATION_ACTOR,
                         audit_type=AuditEvent.ESCALATED, outbox_type=EventType.MANUAL_ASSIGNED,
                         details=details, escalated_at=now, claimed_at=None,
                         extra={"assignee": changes.get("assignee"), "candidateRoles": changes.get(
                             "candidate_roles", task.candidate_roles), "escalated": True}, **changes)
            notify(s, self.settings, task, NotificationType.ESCALATION, unique([*holders, target]), definition.name)
            notify(s, self.settings, task, NotificationType.REASSIGNMENT, [target], definition.name)
            return
        to = spec.get("to") if spec.get("action") in (None, NOTIFY_MANAGER) else None
        managers = [_fill(str(m), task.input) for m in (to if isinstance(to, list) else [to] if to else [])]
        details["notified"] = managers or [DEFAULT_MANAGER]
        task.escalated_at = now
        s.add(TaskEvent(task_id=task.id, type=AuditEvent.ESCALATED.value, actor=ESCALATION_ACTOR, created_at=now,
                        details=details))
        notify(s, self.settings, task, NotificationType.ESCALATION, managers or [DEFAULT_MANAGER], definition.name)
