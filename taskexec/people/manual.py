"""Manual tasks: assignment (also load-balanced), claim, completion, reassignment and the inbox.

A manual task is a database state plus timers, never a busy worker: the MANUAL pool only asks the
router to `assign` a queued task; people then claim and complete it through the public API, and the
beat sweeps in `taskexec.people.manual_timers` send reminders and escalate. Every change takes the task's row
lock (`SELECT ... FOR UPDATE`) and goes through `statechange.change_state`, so of two concurrent claims
exactly one wins and the other sees the winner's assignee (409).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, text, update
from sqlalchemy.orm import Session

from taskexec.core.constants import REJECTION_EVENT, AuditEvent, EventType, Permission, Pool, Priority, Status, TaskType
from taskexec.core.exceptions import BadRequest, Conflict, Forbidden, NotFound, TaskexecError, ValidationFailed
from taskexec.people.assignment import DEFAULT_DEADLINE_S, Assignment
from taskexec.people.assignment import resolve as resolve_assignment
from taskexec.people.manual_timers import next_timer, output_errors, task_config
from taskexec.people.notifications import NotificationType, current_recipients, notify
from taskexec.store.auth import Principal
from taskexec.store.db import json_has_any
from taskexec.store.models import TaskDefinition, TaskEvent, TaskInstance, new_id, utcnow
from taskexec.store.statechange import change_state
from taskexec.store.taskstore import TaskStore
from taskexec.store.visibility import can_see

LOAD_BALANCED = "LOAD_BALANCED"
_BALANCE_LOCK = 0x7E1_4A11  # pg_advisory_xact_lock key serialising load-balanced picks


@dataclass
class Audit:
    """Who acted and from where (IP and user agent of the request)."""

    actor: str
    ip: str | None = None
    user_agent: str | None = None

    def fields(self) -> dict[str, Any]:
        return {"actor": self.actor, "ip": self.ip, "user_agent": self.user_agent}


def may_override(who: Principal) -> bool:
    """`admin` and `tasks:reassign` may act on any manual task."""
    return who.is_admin or who.has(Permission.REASSIGN)


def offered_to(task: TaskInstance, who: Principal) -> bool:
    """Assigned to the caller, or unclaimed and offered to them or one of their roles."""
    if task.assignee:
        return task.assignee == who.sub
    return who.sub in (task.candidate_users or []) or bool(set(task.candidate_roles or []) & set(who.roles))


class ManualTasks:
    """The human side of manual tasks, on top of a TaskManager (same settings, same state machine)."""

    def __init__(self, manager: TaskStore) -> None:
        self.manager = manager
        self.settings = manager.settings

    # ------------------------------------------------------------ assignment (MANUAL pool)

    def assign(self, s: Session, task_id: str, dispatch_token: str, worker_id: str) -> TaskInstance:
        """A queued manual task becomes ASSIGNED (or waits when every load-balanced candidate is full)."""
        task = self.manager.get_task(s, task_id, for_update=True)
        if task.status != Status.PENDING.value or dispatch_token != task.dispatch_token:
            return task
        definition, config = task_config(self.manager, s, task)
        actor = f"worker:{worker_id}"
        try:
            who = resolve_assignment(config, task.input)
        except ValidationFailed as exc:
            self._move(s, task, Status.FAILED, actor=actor,
                       error={"code": "ASSIGNMENT_ERROR", "message": exc.message, "details": exc.details})
            return task
        if (config.get("assignment") or {}).get("strategy") == LOAD_BALANCED and who.candidate_users:
            user = self._least_loaded(s, who.candidate_users)
            if user is None:
                self._defer(s, task, actor, who.candidate_users)
                return task
            who = Assignment(assignee=user, candidate_users=[], candidate_roles=[])
        due = utcnow() + timedelta(seconds=config.get("deadlineSeconds") or DEFAULT_DEADLINE_S)
        self._move(s, task, Status.ASSIGNED, actor=actor, assignee=who.assignee,
                   candidate_users=who.candidate_users, candidate_roles=who.candidate_roles, due_date=due,
                   reminders_sent=[], escalated_at=None, claimed_at=None,
                   extra={"assignee": who.assignee, "candidateRoles": who.candidate_roles,
                          "candidateUsers": who.candidate_users, "dueDate": due.isoformat()})
        task.available_at = next_timer(task, config)  # first reminder (or the deadline): the sweeps' due time
        notify(s, self.settings, task, NotificationType.ASSIGNMENT, current_recipients(task), definition.name)
        return task

    def open_count(self, s: Session, users: list[str]) -> dict[str, int]:
        """Open manual tasks held by each of `users`."""
        rows = s.execute(
            select(TaskInstance.assignee, func.count())
            .where(TaskInstance.type == TaskType.MANUAL.value, TaskInstance.assignee.in_(users),
                   TaskInstance.status.in_([Status.ASSIGNED.value, Status.RUNNING.value]))
            .group_by(TaskInstance.assignee)
        )
        counts = {u: 0 for u in users}
        counts.update({str(a): int(n) for a, n in rows})
        return counts

    def _least_loaded(self, s: Session, users: list[str]) -> str | None:
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _BALANCE_LOCK})
        counts = self.open_count(s, users)
        cap = self.settings.manual_max_open_tasks
        free = [u for u in users if counts[u] < cap]
        return min(free, key=lambda u: counts[u]) if free else None

    def _defer(self, s: Session, task: TaskInstance, actor: str, users: list[str]) -> None:
        """Everyone is at the cap: put the task back for the dispatcher to publish again later."""
        meta = dict(task.execution_metadata or {})
        first = "waitingForCapacitySince" not in meta
        meta.setdefault("waitingForCapacitySince", utcnow().isoformat())
        s.execute(
            update(TaskInstance).where(TaskInstance.id == task.id, TaskInstance.version == task.version).values(
                dispatch_token=new_id(), enqueued_at=None, execution_metadata=meta,
                available_at=utcnow() + timedelta(seconds=self.settings.manual_rebalance_s))
        )
        if first:
            self.manager.record(s, task, AuditEvent.ASSIGNMENT_DEFERRED, actor,
                                details={"reason": "every candidate holds the maximum of open tasks",
                                         "candidates": users, "max": self.settings.manual_max_open_tasks})

    # ------------------------------------------------------------ human actions

    @staticmethod
    def can_claim(task: TaskInstance, who: Principal) -> bool:
        """Whether `claim` would take `task` for `who` (what the inbox shows as a Claim button)."""
        if not who.has(Permission.CLAIM) or task.assignee == who.sub:
            return False
        return may_override(who) or (not task.assignee and offered_to(task, who))

    def load(self, s: Session, task_id: str, who: Principal, lock: bool = False) -> TaskInstance:
        task = self.manager.get_task(s, task_id, for_update=lock)
        if not can_see(task, who):
            raise NotFound(f"task {task_id} not found")
        return task

    def claim(self, s: Session, task_id: str, who: Principal, audit: Audit) -> TaskInstance:
        """Take a task offered to one of the caller's roles; the second of two claims gets 409."""
        task = self.load(s, task_id, who, lock=True)
        _require_open_manual(task)
        if task.assignee == who.sub:
            return task
        if task.assignee and not may_override(who):
            if task.claimed_at is not None:
                raise Conflict(f"task {task_id} is already claimed by {task.assignee}",
                               details={"assignee": task.assignee})
            raise Forbidden(f"task {task_id} is assigned to another person", details={"assignee": task.assignee})
        if not task.assignee and not (offered_to(task, who) or may_override(who)):
            raise Forbidden(f"task {task_id} is not offered to you or your roles")
        previous = task.assignee
        self._move(s, task, Status.ASSIGNED, audit_type=AuditEvent.CLAIMED, assignee=who.sub, claimed_at=utcnow(),
                   details={"previousAssignee": previous} if previous else None,
                   extra={"assignee": who.sub, "claimed": True}, outbox_type=EventType.MANUAL_ASSIGNED,
                   **audit.fields())
        return task

    def complete(self, s: Session, task_id: str, who: Principal, output: Any, audit: Audit) -> TaskInstance:
        """Validate `output` against the outputSchema (and formSchema) and close the task as COMPLETED."""
        task = self.load(s, task_id, who, lock=True)
        _require_open_manual(task)
        if not (offered_to(task, who) or may_override(who)):
            raise Forbidden(f"only the assignee may complete task {task_id}", details={"assignee": task.assignee})
        definition, config = task_config(self.manager, s, task)
        errors = output_errors(definition.output_schema or {}, output)
        if config.get("formSchema"):  # the form people fill is enforced too (its formats, its required fields)
            errors += [e for e in output_errors(config["formSchema"], output) if e not in errors]
        if errors:
            raise ValidationFailed("output does not match the outputSchema", details=errors)
        now = utcnow()
        meta = dict(task.execution_metadata or {})
        meta.update({"endTime": now.isoformat(), "completedBy": who.sub,
                     "durationMs": int((now - task.created_at).total_seconds() * 1000),
                     "executionEnvironment": {"pool": Pool.MANUAL.value}})
        self._move(s, task, Status.COMPLETED, output=output, completed_by=who.sub, execution_metadata=meta,
                   assignee=task.assignee or who.sub, extra={"completedBy": who.sub}, **audit.fields())
        notify(s, self.settings, task, NotificationType.COMPLETION, [task.created_by, task.assignee],
               definition.name)
        return task

    def reassign(self, s: Session, task_id: str, who: Principal, new_assignee: str, reason: str | None,
                 audit: Audit) -> TaskInstance:
        """Give an open manual task to `new_assignee`, with an audit event and a REASSIGNMENT notification."""
        new_assignee = new_assignee.strip()
        if not new_assignee:
            raise BadRequest("newAssignee must name a person", details=[{"field": "newAssignee", "message": "empty"}])
        if not may_override(who):
            raise Forbidden("missing permission tasks:reassign", details={"permission": Permission.REASSIGN.value})
        task = self.load(s, task_id, who, lock=True)
        _require_open_manual(task)
        if task.assignee == new_assignee:
            raise Conflict(f"task {task_id} is already assigned to {new_assignee}",
                           details={"assignee": new_assignee})
        previous = current_recipients(task)
        self._move(s, task, Status.ASSIGNED, audit_type=AuditEvent.REASSIGNED, assignee=new_assignee, claimed_at=None,
                   details={"from": task.assignee, "to": new_assignee, "reason": reason},
                   extra={"assignee": new_assignee, "reassigned": True, "reason": reason},
                   outbox_type=EventType.MANUAL_ASSIGNED, **audit.fields())
        name = task_config(self.manager, s, task)[0].name
        notify(s, self.settings, task, NotificationType.REASSIGNMENT, [new_assignee], name)
        if previous and previous != [new_assignee]:
            notify(s, self.settings, task, NotificationType.REASSIGNMENT, previous, name)
        return task

    def record_rejection(self, s: Session, task_id: str, who: Principal, action: str, exc: TaskexecError,
                         audit: Audit) -> None:
        """A refused claim/completion/reassignment still belongs in the task's history (if the caller may see it)."""
        task = s.get(TaskInstance, task_id)
        if task is None or not can_see(task, who):
            return
        s.add(TaskEvent(task_id=task.id, type=REJECTION_EVENT[action].value, created_at=utcnow(),
                        details={"status": exc.status, "code": str(exc.code), "message": exc.message,
                                 "errors": exc.details},
                        **audit.fields()))

    # ------------------------------------------------------------ inbox

    def inbox(self, s: Session, who: Principal, page: int, limit: int
              ) -> tuple[list[tuple[TaskInstance, str]], int]:
        """The caller's open manual tasks (theirs, or unclaimed and offered to them), by priority then due date."""
        offered = or_(
            TaskInstance.assignee == who.sub,
            and_(TaskInstance.assignee.is_(None),
                 or_(json_has_any(TaskInstance.candidate_users, [who.sub]),
                     json_has_any(TaskInstance.candidate_roles, list(who.roles)))),
        )
        where = and_(TaskInstance.type == TaskType.MANUAL.value, TaskInstance.status == Status.ASSIGNED.value,
                     offered)
        total = s.scalar(select(func.count()).select_from(TaskInstance).where(where)) or 0
        rank = case(*((TaskInstance.priority == p.value, p.rank) for p in Priority), else_=0)
        stmt = (
            select(TaskInstance, TaskDefinition.name)
            .join(TaskDefinition, and_(TaskDefinition.id == TaskInstance.definition_id,
                                       TaskDefinition.version == TaskInstance.definition_version))
            .where(where)
            .order_by(rank.desc(), TaskInstance.due_date.asc().nulls_last(), TaskInstance.created_at,
                      TaskInstance.id)
            .offset((page - 1) * limit)
            .limit(limit)
        )
        return [(t, str(n)) for t, n in s.execute(stmt)], total

    # ------------------------------------------------------------ helpers

    def _move(self, s: Session, task: TaskInstance, target: Status, *, actor: str | None,
              extra: dict[str, Any] | None = None, **kwargs: Any) -> None:
        change_state(s, self.settings, task, target, actor=actor, extra=extra, **kwargs)


def _require_open_manual(task: TaskInstance) -> None:
    if task.type != TaskType.MANUAL.value:
        raise Conflict(f"task {task.id} is a {task.type} task, not MANUAL", details={"type": task.type})
    if task.status != Status.ASSIGNED.value:
        raise Conflict(f"task {task.id} is {task.status}, not open for people", details={"status": task.status})
