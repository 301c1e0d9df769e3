"""Queued timeout: a task no worker takes in time ends TIMED_OUT with QUEUE_TIMEOUT instead of waiting forever.

Every time a task becomes PENDING (submitted, retried, deferred, re-driven) it gets a `queue_deadline`:
the moment it may first run (`available_at`) plus its limit, `executionConfig.queuedTimeoutSeconds`
(definition, or the submission's override) or `TEL_QUEUED_TIMEOUT` (default 24 h). The router's
`queued` sweep (sent by `taskexec beat` every 30 s, carried out by the manual pool like `stale`) ends
the PENDING tasks past their deadline: TIMED_OUT, error QUEUE_TIMEOUT, the `task.instance.timed_out`
event, and a dead letter so an operator can re-drive them once workers are back. A message for such a
task that a worker receives later runs nothing: `start` (and `assign`) refuse a terminal task.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from taskexec.core.config import Settings
from taskexec.core.constants import Status, TaskErrorCode, TaskType
from taskexec.core.limits import queued_timeout_s
from taskexec.services.deadletters import record_dead_letter
from taskexec.store.models import TaskDefinition, TaskInstance, utcnow
from taskexec.store.statechange import change_state

log = logging.getLogger(__name__)
SWEEP_BATCH = 100
MAX_BATCHES = 10  # per sweep call: a large backlog is ended over several sweeps, never in one long transaction
ACTOR = "system:queue-timeout"


class QueueTimeouts:
    """The `queued` sweep."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def sweep(self, s: Session, now: datetime | None = None) -> list[str]:
        """End every PENDING task past its queue deadline (in batches); return their ids."""
        now = now or utcnow()
        done: list[str] = []
        for _ in range(MAX_BATCHES):
            batch = self._due(s, now)
            for task in batch:
                self._expire(s, task, now)
                done.append(task.id)
            s.flush()
            if len(batch) < SWEEP_BATCH:
                break
        return done

    def _due(self, s: Session, now: datetime) -> list[TaskInstance]:
        legacy = now - timedelta(seconds=self.settings.queued_timeout_s)  # rows from before migration 0003
        return list(s.scalars(due(now, legacy)).all())

    def _expire(self, s: Session, task: TaskInstance, now: datetime) -> None:
        queue = self.settings.queues[TaskType(task.type)]
        ready = task.available_at
        waited = max(0, int((now - ready).total_seconds())) if ready else None
        definition = s.get(TaskDefinition, (task.definition_id, task.definition_version))
        limit = queued_timeout_s(self.settings, definition.execution_config if definition else None,
                                 task.execution_config)
        error = {"code": TaskErrorCode.QUEUE_TIMEOUT.value,
                 "message": f"no worker took the task from queue {queue} within {limit} s",
                 "details": {"queue": queue, "limitSeconds": limit, "waitedSeconds": waited,
                             "retryCount": task.retry_count}}
        change_state(s, self.settings, task, Status.TIMED_OUT, actor=ACTOR, details={"error": error}, error=error,
                     queue_deadline=None, worker_id=None)
        record_dead_letter(s, task, queue, error)
        log.warning("task timed out in its queue", extra={"taskId": task.id, "queue": queue, "limitSeconds": limit})


def due(now: datetime, legacy: datetime) -> Select[TaskInstance]:
    """PENDING tasks past their queue deadline (or, without one, available before `legacy`), locked: the
    partial index ix_task_instances_queue_deadline (PENDING rows only) serves it."""
    return (
        select(TaskInstance)
        .where(TaskInstance.status == Status.PENDING.value,
               or_(TaskInstance.queue_deadline < now,
                   and_(TaskInstance.queue_deadline.is_(None), TaskInstance.available_at < legacy)))
        .order_by(TaskInstance.queue_deadline)
        .limit(SWEEP_BATCH)
        .with_for_update(skip_locked=True)
    )
