"""Dead letters: tasks whose retries are spent, listed for operators and re-driven by an admin.

Re-drive is Camunda-like: the *same* task gets a fresh attempt (retry count reset to 0, a new
dispatch token, PENDING now), a `task.instance.retry` event is emitted, and the dead letter is
marked re-driven (who and when). A second re-drive of the same dead letter is a 409.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from taskexec.core.constants import Status
from taskexec.core.exceptions import Conflict, NotFound
from taskexec.core.limits import queue_deadline
from taskexec.store.models import DeadLetter, TaskDefinition, TaskInstance, new_id, utcnow
from taskexec.store.statechange import change_state

if TYPE_CHECKING:
    from taskexec.contract.schemas import DeadLetterQuery
    from taskexec.core.config import Settings

REDRIVABLE = (Status.FAILED.value, Status.TIMED_OUT.value)


def record_dead_letter(s: Session, task: TaskInstance, queue: str, error: dict[str, Any] | None) -> DeadLetter:
    """A task just failed for good after asking for a retry: remember it for re-drive."""
    row = DeadLetter(id=new_id(), task_id=task.id, queue=queue, error=error, created_at=utcnow())
    s.add(row)
    return row


def resolve_dead_letters(s: Session, task_id: str, actor: str) -> None:
    """The task runs again by other means (manual retry): its open dead letters are resolved."""
    s.execute(update(DeadLetter).where(DeadLetter.task_id == task_id, DeadLetter.redriven_at.is_(None))
              .values(redriven_at=utcnow(), redriven_by=actor))


class DeadLetters:
    """Listing and re-driving; the router's endpoints go through here."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def list(self, s: Session, q: DeadLetterQuery) -> tuple[list[tuple[DeadLetter, TaskInstance]], int]:
        stmt = select(DeadLetter, TaskInstance).join(TaskInstance, TaskInstance.id == DeadLetter.task_id)
        if q.resolved is not None:
            column = DeadLetter.redriven_at
            stmt = stmt.where(column.is_not(None) if q.resolved else column.is_(None))
        if q.task_definition_id:
            stmt = stmt.where(TaskInstance.definition_id == q.task_definition_id)
        if q.task_id:
            stmt = stmt.where(DeadLetter.task_id == q.task_id)
        total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        rows = s.execute(stmt.order_by(DeadLetter.created_at.desc(), DeadLetter.id)
                         .offset((q.page - 1) * q.limit).limit(q.limit)).all()
        return [(r[0], r[1]) for r in rows], int(total)

    def redrive(self, s: Session, dead_letter_id: str, actor: str) -> tuple[DeadLetter, TaskInstance]:
        row = s.scalar(select(DeadLetter).where(DeadLetter.id == dead_letter_id).with_for_update())
        if row is None:
            raise NotFound(f"dead letter {dead_letter_id} not found")
        if row.redriven_at is not None:
            raise Conflict(f"dead letter {dead_letter_id} was already re-driven",
                           details={"redrivenAt": row.redriven_at.isoformat(), "redrivenBy": row.redriven_by})
        task = s.scalar(select(TaskInstance).where(TaskInstance.id == row.task_id).with_for_update())
        if task is None:
            raise NotFound(f"task {row.task_id} not found")
        if task.status not in REDRIVABLE:
            raise Conflict(f"task {task.id} is {task.status}; only a FAILED or TIMED_OUT task can be re-driven",
                           details={"status": task.status})
        now = utcnow()
        definition = s.get(TaskDefinition, (task.definition_id, task.definition_version))
        deadline = queue_deadline(self.settings, now, definition.execution_config if definition else None,
                                  task.execution_config)
        change_state(s, self.settings, task, Status.PENDING, actor=actor,
                     extra={"nextAttemptAt": now.isoformat(), "redrive": row.id},
                     details={"redrive": row.id, "previousError": task.error, "nextAttemptAt": now.isoformat()},
                     dispatch_token=new_id(), enqueued_at=None, available_at=now, retry_count=0,
                     worker_id=None, output=None, error=None, queue_deadline=deadline)
        row.redriven_at, row.redriven_by = now, actor
        return row, task


def dead_letter_out(row: DeadLetter, task: TaskInstance) -> dict[str, Any]:
    return {
        "id": row.id,
        "taskId": row.task_id,
        "taskDefinitionId": task.definition_id,
        "type": task.type,
        "queue": row.queue,
        "error": row.error,
        "createdAt": row.created_at.isoformat(),
        "redrivenAt": row.redriven_at.isoformat() if row.redriven_at else None,
        "redrivenBy": row.redriven_by,
        "taskStatus": task.status,
        "retryCount": task.retry_count,
    }
