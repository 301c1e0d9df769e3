"""The AUTOMATED pool: each attempt runs in a single-use sandbox container."""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
from typing import Any

from sandbox import DockerRunner, Limits, RunResult, RunSpec, SandboxUnavailable
from sandbox.egress import Egress
from taskexec.clients.client import RouterClient
from taskexec.contract.protocol import Job, LostIn
from taskexec.contract.schemas import AutomatedConfig, ResourceRequirements, TaskError
from taskexec.core.config import Settings, get_settings
from taskexec.core.constants import CELERY_TASK_EXECUTE, Status, TaskErrorCode, TaskType
from taskexec.core.limits import attempt_timeout_s, parse_cpu, parse_memory
from taskexec.core.netpolicy import parse_networks, refused_ipv4_networks
from workers.base import ExecuteTask, Outcome, worker_id

log = logging.getLogger(__name__)
CANCEL_POLL_S = 0.5

_runner: DockerRunner | None = None
_runner_lock = threading.Lock()


def runner(settings: Settings | None = None) -> DockerRunner:
    """The process-wide runner (and its warm container pool)."""
    global _runner
    with _runner_lock:
        if _runner is None:
            s = settings or get_settings()
            egress = None
            if s.sandbox_allow_network:
                allowed = [str(n) for n in parse_networks(s.sandbox_allowed_networks) if n.version == 4]
                egress = Egress(s.sandbox_network, refused_ipv4_networks(), allowed, mode=s.sandbox_egress_rules)
            _runner = DockerRunner(
                images={"python": s.sandbox_image_python, "shell": s.sandbox_image_shell},
                log_tail_bytes=s.sandbox_log_tail_bytes,
                container_runtime=s.sandbox_runtime,
                allow_network=s.sandbox_allow_network,
                pool_size=s.sandbox_pool_size,
                deployment=s.queue_automated,  # one deployment = one automated queue: reap only our containers
                egress=egress,  # tasks with outbound access: their own network, public addresses only
            )
        return _runner


def build_spec(job: Job, settings: Settings) -> RunSpec:
    """Definition config plus operator defaults and ceilings -> a sandbox RunSpec."""
    definition, task = job.definition, job.task
    cfg = AutomatedConfig.model_validate(definition.execution_config)  # validated when it was registered
    res = cfg.resource_requirements or ResourceRequirements()
    timeout_s = attempt_timeout_s(definition.timeout, definition.execution_config, settings.default_timeout_s,
                                  settings.executor_max_timeout_s)
    limits = Limits(
        cpu=min(parse_cpu(res.cpu if res.cpu is not None else settings.sandbox_default_cpu), settings.sandbox_max_cpu),
        memory_bytes=min(parse_memory(res.memory if res.memory is not None else settings.sandbox_default_memory),
                         parse_memory(settings.sandbox_max_memory)),
        timeout_s=timeout_s,
        pids=settings.sandbox_pids,
        output_bytes=settings.sandbox_output_bytes,
        tmp_bytes=settings.sandbox_tmp_bytes,
    )
    env = dict(cfg.environment_variables or {})
    env.update({"TASK_ID": task.id, "WORKFLOW_ID": task.workflow_instance_id or ""})
    return RunSpec(
        task_id=task.id,
        attempt=job.attempt,
        runtime=cfg.runtime.value,
        code=cfg.code,
        input=task.input,
        limits=limits,
        env=env,
        network=bool(cfg.network and cfg.network.outbound_access),
        worker_id=worker_id(),
    )


def outcome_of(result: RunResult) -> Outcome:
    meta = {
        "exitCode": result.exit_code,
        "durationMs": result.duration_ms,
        "cpuTimeMs": result.cpu_time_ms,
        "peakMemoryBytes": result.peak_memory_bytes,
        "executionEnvironment": result.environment,
    }
    logs: dict[str, Any] = {"stdout": result.stdout_tail, "stderr": result.stderr_tail, "metadata": meta}
    if result.ok:
        return Outcome(Status.COMPLETED.value, output=result.output, **logs)
    code = result.error_code or TaskErrorCode.SANDBOX_ERROR.value
    if code == TaskErrorCode.CANCELLED.value:
        return Outcome(Status.CANCELLED.value, report=False, **logs)
    error = TaskError(code=code, message=result.error_message or code, details=result.error_details)
    if code == TaskErrorCode.TIME_LIMIT_EXCEEDED.value:
        return Outcome(Status.TIMED_OUT.value, error=error, **logs)
    return Outcome(Status.FAILED.value, error=error, retry=code == TaskErrorCode.SANDBOX_ERROR.value, **logs)


def watch_cancel(client: RouterClient, task_id: str, cancel: threading.Event, done: threading.Event) -> None:
    """Poll the router; set `cancel` when the task was cancelled (the container is killed, never a worker)."""
    while not done.wait(CANCEL_POLL_S):
        try:
            if client.status(task_id).status is Status.CANCELLED:
                cancel.set()
                return
        except Exception:  # router briefly unreachable: keep running, try again
            continue


def local_worker_gone(worker: str) -> bool:
    """True for a worker id ``host:pid`` of this host whose process no longer exists.

    Workers on other hosts sharing the engine are left to the deadline rule.
    """
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def reap_and_report(settings: Settings | None = None) -> int:
    """Remove expired or orphaned containers and fail their attempts (WORKER_LOST) via the router."""
    settings = settings or get_settings()
    removed = runner(settings).reap(worker_gone=local_worker_gone)
    client = RouterClient(settings, retry_for_s=10)
    for item in removed:
        if item["idlePool"] or not item["taskId"]:
            continue
        log.warning("reaped sandbox container", extra={"taskId": item["taskId"], "attempt": item["attempt"],
                                                         "reason": item["reason"]})
        try:
            client.lost(item["taskId"], LostIn(attempt=item["attempt"] or None,
                                               reason=f"sandbox container reaped: {item['reason']}"))
        except Exception as exc:  # noqa: BLE001 - the stale sweep catches it later
            log.warning("cannot report lost task", extra={"taskId": item["taskId"], "error": str(exc)})
    client.close()
    return len(removed)


class AutomatedTask(ExecuteTask):
    task_type = TaskType.AUTOMATED
    name = CELERY_TASK_EXECUTE[TaskType.AUTOMATED]

    def execute(self, job: Job) -> Outcome:
        settings = get_settings()
        run = runner(settings)
        spec = build_spec(job, settings)
        if job.previous_worker:  # a redelivery: the earlier attempt's container may still run
            killed = run.kill_task(spec.task_id)
            if killed:
                log.info("killed orphaned containers", extra={"taskId": spec.task_id, "count": killed})
        cancel, done = threading.Event(), threading.Event()
        # run in this attempt's context: its status polls carry the task's request id and trace
        watcher = threading.Thread(target=contextvars.copy_context().run,
                                   args=(watch_cancel, self.router, spec.task_id, cancel, done), daemon=True)
        watcher.start()
        try:
            result = run.run(spec, cancel=cancel)
        except SandboxUnavailable as exc:
            return Outcome.failed(TaskErrorCode.SANDBOX_ERROR.value, f"sandbox unavailable: {exc}", retry=True)
        finally:
            done.set()
        outcome = outcome_of(result)
        if outcome.status == Status.CANCELLED.value and not cancel.is_set():
            # Killed or removed from outside (the engine restarting, `docker kill`), not by a cancel seen
            # here: our fault, to be retried. The router ignores it (409) if the task was cancelled after
            # all or a newer attempt owns it; not reporting would leave the task RUNNING.
            return Outcome.failed(TaskErrorCode.SANDBOX_ERROR.value,
                                  "the sandbox container was killed or removed from outside the worker",
                                  {"reason": "CONTAINER_LOST", "exitCode": result.exit_code}, retry=True,
                                  metadata=outcome.metadata, stdout=outcome.stdout, stderr=outcome.stderr)
        return outcome
