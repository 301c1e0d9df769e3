"""Tasks whose worker vanished: the sandbox reaper reports them, a sweep finds the rest.

A worker killed with ``kill -9`` leaves its task RUNNING. Celery redelivers the message once
the broker's visibility timeout passes, which is deliberately longer than the longest task.
Two faster paths end that wait:

* the reaper (``taskexec beat`` -> automated pool) removes the containers of workers that are
  gone and reports each task with :meth:`Recovery.lost`;
* the ``stale`` sweep finds RUNNING automated and integration tasks whose attempt is past its
  wall time plus a grace period (``TEL_STALE_RUNNING_GRACE``).

Either way the attempt fails through the normal retry path with the contract's "our fault" code
(``SANDBOX_ERROR`` for automated, ``INTEGRATION_ERROR`` for integration tasks) and
``details.reason = "WORKER_LOST"``: another attempt when the retry policy allows it (with a new
dispatch token, so the old message is ignored if it is redelivered), else FAILED.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from taskexec.contract.protocol import FinishIn
from taskexec.core.constants import Status, TaskErrorCode, TaskType
from taskexec.core.limits import attempt_timeout_s
from taskexec.store.models import TaskInstance, parse_time, utcnow
from taskexec.store.taskstore import TaskStore

log = logging.getLogger(__name__)
WATCHED_TYPES = (TaskType.AUTOMATED.value, TaskType.INTEGRATION.value)
OUR_FAULT = {TaskType.AUTOMATED.value: TaskErrorCode.SANDBOX_ERROR,
             TaskType.INTEGRATION.value: TaskErrorCode.INTEGRATION_ERROR}
SWEEP_BATCH = 100


class Recovery:
    """Fails attempts whose worker is gone, through :meth:`TaskManager.finish`."""

    def __init__(self, manager: TaskStore) -> None:
        self.manager = manager
        self.settings = manager.settings

    def lost(self, s: Session, task_id: str, attempt: int | None, reason: str,
             actor: str = "system:recovery") -> TaskInstance | None:
        """End attempt ``attempt`` (None: the current one) as lost; None if the task is not RUNNING there."""
        task = self.manager.get_task(s, task_id, for_update=True)
        if task.status != Status.RUNNING.value or (attempt is not None and task.attempt != attempt):
            return None
        body = FinishIn.model_validate({
            "attempt": task.attempt,
            "status": Status.FAILED.value,
            "error": {"code": OUR_FAULT.get(task.type, TaskErrorCode.SANDBOX_ERROR).value,
                      "message": f"the worker running attempt {task.attempt} is gone ({reason})",
                      "details": {"reason": TaskErrorCode.WORKER_LOST.value, "workerId": task.worker_id,
                                  "cause": reason}},
            "retry": True,
        })
        log.warning("worker lost", extra={"taskId": task_id, "attempt": task.attempt, "reason": reason})
        return self.manager.finish(s, task_id, body, actor)

    def stale(self, s: Session, now: datetime | None = None) -> list[str]:
        """Fail RUNNING attempts past their wall time plus grace; return their task ids."""
        now = now or utcnow()
        grace = timedelta(seconds=self.settings.stale_running_grace_s)
        rows = s.scalars(
            select(TaskInstance)
            .where(TaskInstance.status == Status.RUNNING.value, TaskInstance.type.in_(WATCHED_TYPES),
                   TaskInstance.updated_at < now - grace)
            .order_by(TaskInstance.updated_at)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        done = []
        for task in rows:
            past = now > self.deadline(s, task) + grace
            if past and self.lost(s, task.id, task.attempt, "no result before the attempt's deadline"):
                done.append(task.id)
        return done

    def deadline(self, s: Session, task: TaskInstance) -> datetime:
        """When the current attempt must have ended: its start plus its wall-time limit."""
        definition = self.manager.get_definition(s, task.definition_id, task.definition_version)
        config = {**definition.execution_config, **(task.execution_config or {})}
        timeout = attempt_timeout_s(definition.timeout_ms, config, self.settings.default_timeout_s,
                                    self.settings.executor_max_timeout_s)
        started = _started(task) or task.updated_at
        return started + timedelta(seconds=timeout)


def _started(task: TaskInstance) -> datetime | None:
    return parse_time((task.execution_metadata or {}).get("startTime"))
