"""The MANUAL pool: turns a queued manual task into an assignment (a database state, not a busy worker)."""

from __future__ import annotations

from taskexec.contract.protocol import Job, StartIn
from taskexec.core.constants import CELERY_TASK_EXECUTE, TaskType
from taskexec.core.exceptions import NotFound
from workers.base import ExecuteTask, Outcome, worker_id


class ManualTask(ExecuteTask):
    task_type = TaskType.MANUAL
    name = CELERY_TASK_EXECUTE[TaskType.MANUAL]

    def run(self, task_id: str, dispatch_token: str) -> str:
        try:
            answer = self.router.assign(task_id, StartIn(dispatch_token=dispatch_token, worker_id=worker_id()))
        except NotFound:
            return "unknown"
        return answer.status.value

    def execute(self, job: Job) -> Outcome:  # pragma: no cover - manual tasks never "execute"
        raise NotImplementedError
