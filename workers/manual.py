"""The MANUAL pool: turns a queued manual task into an assignment (a database state, not a busy worker)."""

from __future__ import annotations

from typing import Any

from taskexec.constants import CELERY_TASK_EXECUTE, TaskType
from taskexec.exceptions import NotFound
from workers.base import ExecuteTask, worker_id


class ManualTask(ExecuteTask):
    task_type = "MANUAL"
    name = CELERY_TASK_EXECUTE[TaskType.MANUAL]

    def run(self, task_id: str, dispatch_token: str) -> str:
        try:
            result = self.router.post(f"/tasks/{task_id}/assign", {"dispatchToken": dispatch_token,
                                                                   "workerId": worker_id()})
        except NotFound:
            return "unknown"
        return str(result.get("status"))

    def execute(self, job: dict[str, Any]) -> Any:  # pragma: no cover - manual tasks never "execute"
        raise NotImplementedError
