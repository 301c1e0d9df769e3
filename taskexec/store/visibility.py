"""Who may see a task: the one rule behind the task API, the manual-task inbox and the manual service.

A caller sees every task when they hold one of `SEES_EVERY_TASK` (or `admin`): submitters
(`tasks:execute`), the pools and services (`tasks:internal`), read-only operations staff
(`tasks:monitor`) and the people who may hand manual work to others (`tasks:reassign`). Anyone else
(an `operator`) sees only the tasks assigned to them or offered to them or one of their roles. A task
the caller may not see is answered 404, as if it did not exist (docs/security.md).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, true

from taskexec.core.constants import Permission
from taskexec.store.auth import Principal
from taskexec.store.db import json_has_any
from taskexec.store.models import TaskInstance

SEES_EVERY_TASK: tuple[Permission, ...] = (
    Permission.EXECUTE,
    Permission.INTERNAL,
    Permission.MONITOR,
    Permission.REASSIGN,
)


def sees_every_task(who: Principal) -> bool:
    """Whether `who` sees all tasks (`Principal.has` already grants everything to `admin`)."""
    return any(who.has(p) for p in SEES_EVERY_TASK)


def can_see(task: TaskInstance, who: Principal) -> bool:
    """Whether `who` may see `task`: everything (see `SEES_EVERY_TASK`), else only what is theirs or offered."""
    if sees_every_task(who):
        return True
    return (task.assignee == who.sub or who.sub in (task.candidate_users or [])
            or bool(set(task.candidate_roles or []) & set(who.roles)))


def visible_to(who: Principal) -> ColumnElement[bool]:
    """`can_see` as a SQL condition on `task_instances`, so that lists count and page only visible tasks."""
    if sees_every_task(who):
        return true()
    return or_(TaskInstance.assignee == who.sub,
               json_has_any(TaskInstance.candidate_users, [who.sub]),
               json_has_any(TaskInstance.candidate_roles, list(who.roles)))
