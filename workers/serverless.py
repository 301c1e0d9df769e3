"""The serverless AUTOMATED executor: an AWS Lambda handler fed by SQS (serverless/template.yaml).

Each record of a batch is one AUTOMATED task sent by the router (`taskexec/broker/sqs.py`). It runs exactly as
in the Celery pool: `start` through the router's internal API with the service credential (the
function holds no database credentials), the code in a sandbox, `finish` with the result; only the
sandbox is a child process (`sandbox.process.ProcessRunner`), since a function has no Docker.

Partial batch failures: a record that could not be handled (a malformed body, the router unreachable,
no time left to start it) is returned in `batchItemFailures`; SQS delivers it again after the
visibility timeout and, after `maxReceiveCount` deliveries, moves it to the dead-letter queue. The
others are deleted by the event source mapping.

The function's own timeout: before each record the handler reads `context.get_remaining_time_in_millis()`;
with less than `MIN_START_S` left it starts nothing more (the rest are batch failures, still PENDING at
the router), and an attempt never gets more than the time left minus `MARGIN_S` (kept to report the
result). A started task whose timeout does not fit in what is left is handed back to the router
(`defer`, not counted as a retry) unless it is the batch's first, which runs capped to the time left.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import os
import socket
import threading
import time
from typing import Any

from pydantic import ValidationError

from sandbox.process import ProcessRunner
from taskexec.clients.client import RouterClient
from taskexec.contract.protocol import DeferIn, Job, StartIn
from taskexec.contract.schemas import SqsTaskMessage
from taskexec.core.config import Settings, load_settings
from taskexec.core.constants import Status, TaskErrorCode
from taskexec.core.exceptions import Conflict, NotFound
from workers.automated import build_spec, outcome_of, watch_cancel
from workers.base import Outcome

log = logging.getLogger(__name__)
MARGIN_S = 5.0  # kept free after an attempt: report the result, return the batch response
MIN_START_S = 10.0  # less than this left: start no further task in this invocation
ROUTER_RETRY_S = 10.0  # an unreachable router fails the record (retried by SQS), not the whole budget


class ServerlessExecutor:
    """Handles SQS batches; one per execution environment, reused across invocations."""

    def __init__(self, settings: Settings, runner: ProcessRunner | None = None) -> None:
        self.settings = settings
        self.router = RouterClient(settings, retry_for_s=ROUTER_RETRY_S)
        self.runner = runner or ProcessRunner(log_tail_bytes=settings.sandbox_log_tail_bytes)
        self.worker_id = f"lambda:{socket.gethostname()}:{os.getpid()}"

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event.get("Records") or []
        failures: list[str] = []
        for index, record in enumerate(records):
            left_s = context.get_remaining_time_in_millis() / 1000.0
            if left_s < MIN_START_S:
                rest = [r["messageId"] for r in records[index:]]
                log.warning("function time budget spent: records handed back to SQS",
                            extra={"count": len(rest), "remainingMs": int(left_s * 1000)})
                failures.extend(rest)
                break
            deadline = time.monotonic() + left_s - MARGIN_S
            try:
                self.process(record, deadline, first=index == 0)
            except Exception as exc:  # noqa: BLE001 - this record fails; the batch goes on
                log.warning("record failed; SQS will deliver it again",
                            extra={"messageId": record.get("messageId"), "error": f"{type(exc).__name__}: {exc}"})
                failures.append(record["messageId"])
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}

    def process(self, record: dict[str, Any], deadline: float, first: bool) -> None:
        """One record: raises when it must be delivered again (malformed, router unreachable)."""
        try:
            message = SqsTaskMessage.model_validate_json(record["body"])
        except ValidationError as exc:
            raise ValueError(f"not a task message: {exc.error_count()} error(s)") from None
        receive = (record.get("attributes") or {}).get("ApproximateReceiveCount", "1")
        start_id = f"{record['messageId']}:{receive}"[:64]  # one per delivery, the same if this call is retried
        try:
            answer = self.router.start(message.task_id, StartIn(dispatch_token=message.dispatch_token,
                                                                worker_id=self.worker_id, start_id=start_id))
        except NotFound:
            log.warning("message for unknown task dropped", extra={"taskId": message.task_id})
            return
        job = answer.job
        if job is None:
            log.info("message skipped", extra={"taskId": message.task_id, "reason": answer.reason})
            return
        spec = build_spec(job, self.settings)
        budget = deadline - time.monotonic()
        if spec.limits.timeout_s > budget:
            if not first:  # a fresh invocation has more time: give the task back without counting a retry
                self.router.defer(message.task_id, DeferIn(attempt=job.attempt, delay_ms=0,
                                                           reason="function time budget"))
                log.info("task deferred: its timeout does not fit in the function's time left",
                         extra={"taskId": message.task_id, "timeoutS": spec.limits.timeout_s, "leftS": budget})
                return
            spec = dataclasses.replace(spec, limits=dataclasses.replace(spec.limits, timeout_s=max(1.0, budget)))
        outcome = self.execute(job, spec)
        if outcome.report:
            try:
                self.router.finish(message.task_id, outcome.finish(job.attempt))
            except Conflict as exc:  # cancelled meanwhile, or a newer attempt owns the task
                log.info("result not recorded", extra={"taskId": message.task_id, "reason": exc.message})

    def execute(self, job: Job, spec: Any) -> Outcome:
        cancel, done = threading.Event(), threading.Event()
        # run in this attempt's context: its status polls carry the task's request id and trace
        watcher = threading.Thread(target=contextvars.copy_context().run,
                                   args=(watch_cancel, self.router, spec.task_id, cancel, done), daemon=True)
        watcher.start()
        try:
            result = self.runner.run(spec, cancel=cancel)
        except Exception as exc:  # noqa: BLE001 - our fault (e.g. no space for the working directory): retried
            log.exception("sandbox failed", extra={"taskId": spec.task_id})
            return Outcome.failed(TaskErrorCode.SANDBOX_ERROR.value, f"sandbox unavailable: {type(exc).__name__}",
                                  retry=True)
        finally:
            done.set()
        outcome = outcome_of(result)
        if outcome.status == Status.CANCELLED.value and not cancel.is_set():
            return Outcome.failed(TaskErrorCode.SANDBOX_ERROR.value, "the sandbox process was killed from outside",
                                  {"reason": "PROCESS_LOST", "exitCode": result.exit_code}, retry=True,
                                  metadata=outcome.metadata, stdout=outcome.stdout, stderr=outcome.stderr)
        return outcome


def settings_from_environment() -> Settings:
    """Settings as every process reads them, plus the service token from AWS Secrets Manager when
    `TEL_SERVICE_TOKEN_SECRET_ARN` names it (a Lambda function has no secret files)."""
    settings = load_settings()
    if not settings.service_token_secret_arn:
        return settings
    import boto3

    secret = boto3.client("secretsmanager").get_secret_value(SecretId=settings.service_token_secret_arn)
    return load_settings(TEL_SERVICE_TOKEN=secret["SecretString"].strip())


_executor: ServerlessExecutor | None = None
_lock = threading.Lock()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (`Handler: workers.serverless.handler`)."""
    global _executor
    with _lock:
        if _executor is None:  # cold start: settings, logging, router client, sandbox runner
            from taskexec.observability.logs import configure_logging, secrets_of

            settings = settings_from_environment()
            configure_logging(settings.log_level, secrets_of(settings))
            _executor = ServerlessExecutor(settings)
        executor = _executor
    return executor.handle(event, context)


def reset() -> None:
    """Forget the executor (a new execution environment, for tests): its router connections are closed."""
    global _executor
    with _lock:
        if _executor is not None:
            _executor.router.close()
        _executor = None
