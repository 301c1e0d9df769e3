"""The narrow store interface the task services are written against, and the one query for "latest".

`TaskManager` (taskexec/services/manager.py) owns the task operations and builds `ManualTasks`,
`ManualTimers` and `Recovery` on top of itself. Those only read a task, read a definition, and record
an attempt's result; typed against this Protocol instead of `TaskManager`, they do not import the
manager, so the manager can import them without an import circle.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from taskexec.contract.protocol import FinishIn
from taskexec.core.config import Settings
from taskexec.core.constants import AuditEvent
from taskexec.store.models import TaskDefinition, TaskInstance

# The latest version of definition `:def_id` (highest semantic version): the one definition of "latest",
# shared by the ORM path, the hot path and the submit path.
LATEST_DEFINITION = (select(TaskDefinition).where(TaskDefinition.id == bindparam("def_id"))
                     .order_by(TaskDefinition.version_key.desc()).limit(1))


class TaskStore(Protocol):
    """What manual tasks, their timers and recovery need of the task store (`TaskManager` provides it)."""

    settings: Settings

    def get_task(self, s: Session, task_id: str, for_update: bool = False) -> TaskInstance:
        """The task (locked with `for_update`); NotFound if there is none."""
        ...

    def get_definition(self, s: Session, def_id: str, version: str | None = None) -> TaskDefinition:
        """One version of a definition, or its latest; NotFound if there is none."""
        ...

    def finish(self, s: Session, task_id: str, body: FinishIn, worker: str) -> TaskInstance:
        """Record an attempt's result through the retry policy (409 for a stale attempt)."""
        ...

    def record(self, s: Session, task: TaskInstance, event_type: AuditEvent, actor: str | None,
               **fields: Any) -> None:
        """An audit event that is not a status change."""
        ...
