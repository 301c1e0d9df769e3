"""The base class of every execute task: start through the router, run, report the final state once."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from celery import Task
from celery.exceptions import Reject
from celery.worker import state as worker_state

from taskexec.clients.client import RouterClient
from taskexec.contract.protocol import FinishIn, Job, StartIn
from taskexec.contract.schemas import TaskError
from taskexec.core.config import get_settings
from taskexec.core.constants import Status, TaskErrorCode, TaskType
from taskexec.core.exceptions import Conflict, NotFound
from taskexec.observability import tracing
from workers import wakeup
from workers.signals import attempt_finished, attempt_started

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What an attempt produced; `retry` asks the router for another attempt (our fault or retryable)."""

    status: str  # COMPLETED | FAILED | TIMED_OUT | CANCELLED
    output: Any = None
    error: TaskError | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    stdout: str | None = None
    stderr: str | None = None
    retry: bool = False
    report: bool = True  # False when the router already holds the final state (e.g. cancelled)

    @classmethod
    def failed(cls, code: str, message: str, details: Any = None, **kw: Any) -> Outcome:
        return cls(Status.FAILED.value, error=TaskError(code=code, message=message, details=details), **kw)

    def finish(self, attempt: int) -> FinishIn:
        """The report of this outcome for `attempt`."""
        return FinishIn(attempt=attempt, status=self.status, output=self.output,  # type: ignore[arg-type]
                        error=self.error, execution_metadata=self.metadata, stdout=self.stdout,
                        stderr=self.stderr, retry=self.retry)


_worker_id: tuple[int, str] = (0, "")


def worker_id() -> str:
    """`host:pid` of this process (computed once per process: it is on every report)."""
    global _worker_id
    pid = os.getpid()
    if _worker_id[0] != pid:  # a forked child gets its own
        _worker_id = (pid, f"{socket.gethostname()}:{pid}")
    return _worker_id[1]


def shutting_down() -> bool:
    """True once this worker process received SIGTERM/SIGINT/SIGQUIT (Celery sets these on the signal)."""
    return any(flag is not None and flag is not False
               for flag in (worker_state.should_stop, worker_state.should_terminate))


class ExecuteTask(Task):
    """Subclasses implement `execute(job)`; the router decides if a (re)delivered message runs at all."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    Request = wakeup.REQUEST  # wakes the event loop after the late ack
    _client: RouterClient | None = None

    @property
    def router(self) -> RouterClient:
        """The process's client; its threads' reports travel together (`RouterClient(batch=True)`)."""
        if self._client is None:
            self._client = RouterClient(get_settings(), batch=True)
        return self._client

    def run(self, task_id: str, dispatch_token: str) -> str:
        if shutting_down():
            # SIGTERM (warm shutdown): Celery may still hand over a message it fetched during its last
            # loop turn. Give it back untouched (the task stays PENDING) for another worker to run.
            log.info("worker shutting down: message handed back", extra={"taskId": task_id})
            raise Reject("worker shutting down", requeue=True)
        start = StartIn(dispatch_token=dispatch_token, worker_id=worker_id(), start_id=uuid.uuid4().hex)
        try:
            answer = self.router.start(task_id, start)
        except NotFound:
            log.warning("message for unknown task dropped", extra={"taskId": task_id})
            return "unknown"
        job = answer.job
        if job is None:
            log.info("message skipped", extra={"taskId": task_id, "reason": answer.reason})
            return "skipped"
        # the submitting request's ids: on this attempt's log lines and on every call made for it
        trace = tracing.for_task(job.task.request_id, job.task.traceparent)
        tracing.set_current(trace)
        try:
            return self._attempt(task_id, job, trace)
        finally:
            tracing.set_current(None)  # a pool thread runs one task after another

    def _attempt(self, task_id: str, job: Job, trace: tracing.Trace) -> str:
        ctx = {"taskId": task_id, "attempt": job.attempt, "definition": job.definition.id,
               "correlationId": job.task.correlation_id, **trace.fields()}
        attempt_started.send(sender=self, job=job, context=ctx)
        log.info("task started", extra=ctx)
        try:
            outcome = self.execute(job)
        except Exception as exc:  # our own bug: report it rather than leave the task RUNNING
            log.exception("executor crashed", extra=ctx)
            outcome = Outcome.failed(TaskErrorCode.SANDBOX_ERROR if self.task_type == TaskType.AUTOMATED
                                     else TaskErrorCode.INTEGRATION_ERROR,
                                     f"executor error: {type(exc).__name__}", retry=True)
        attempt_finished.send(sender=self, job=job, outcome=outcome, context=ctx)
        if outcome.report:
            self._report(task_id, job.attempt, outcome, ctx)
        log.info("task finished", extra={**ctx, "status": outcome.status})
        return outcome.status

    task_type = TaskType.AUTOMATED

    def execute(self, job: Job) -> Outcome:
        raise NotImplementedError

    def _report(self, task_id: str, attempt: int, outcome: Outcome, ctx: dict[str, Any]) -> None:
        try:
            self.router.finish(task_id, outcome.finish(attempt))
        except Conflict as exc:  # cancelled meanwhile, or a newer attempt owns the task
            log.info("result not recorded", extra={**ctx, "reason": exc.message})
