"""Celery signal hooks of a worker process: its Prometheus metrics, and the log context of each task.

Pools run Celery's thread pool, so a worker is one process: it serves its own registry on
`TEL_METRICS_PORT` (`taskexec worker <pool> --metrics-port N`; 0 disables) from `worker_init`,
with the probes `/health` and `/ready` (`workers/health.py`).
Who this worker is (node name, host, pool): `workers.node`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import signals

from taskexec.core.config import get_settings
from taskexec.core.constants import CELERY_TASK_EXECUTE, Status
from taskexec.observability import metrics
from taskexec.observability.logs import bind_task, clear_task
from taskexec.observability.metrics_export import serve
from workers import health, node
from workers.signals import attempt_finished, attempt_started

log = logging.getLogger(__name__)
EXECUTE_TASKS = frozenset(CELERY_TASK_EXECUTE.values())

_started: dict[str, float] = {}
_lock = threading.Lock()


def outcome_label(outcome: Any) -> str:
    """COMPLETED, CANCELLED, or the error code of a failed or timed-out attempt."""
    if outcome.status in (Status.COMPLETED.value, Status.CANCELLED.value):
        return str(outcome.status)
    if outcome.status == Status.PENDING.value:  # handed back to wait (e.g. a target's rate limit)
        return "DEFERRED"
    return str(outcome.error.code if outcome.error is not None else outcome.status)


def _task_labels(task_name: str | None, delivery_info: dict[str, Any] | None) -> dict[str, str]:
    """celery-exporter's labels of a task series: name, hostname (host part of the node name), queue_name."""
    info = delivery_info or {}
    queue = info.get("routing_key") or info.get("exchange") or "unknown"
    return {"name": task_name or "unknown", "hostname": node.hostname(), "queue_name": str(queue)}


def _request_info(task: Any) -> dict[str, Any] | None:
    request = getattr(task, "request", None)
    return getattr(request, "delivery_info", None) if request is not None else None


@signals.worker_init.connect
def _on_init(**_: Any) -> None:
    """Serve /metrics, /health and /ready from the start: liveness answers while the worker connects."""
    settings = get_settings()
    health.STATE.stale_after_s = settings.health_stale_s
    health.STATE.stall.stall_after_s = settings.health_stall_s
    serve(settings.metrics_port, routes=health.routes())


@signals.worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    node.set_node(getattr(sender, "hostname", None) or node.name())
    metrics.child(metrics.WORKER_UP, hostname=node.hostname()).set(1)
    metrics.child(metrics.WORKER_TASKS_ACTIVE, hostname=node.hostname()).set(0)
    metrics.child(metrics.WORKER_CONSUMER_STALLED, **node.labels()).set(0)  # the series exists before any stall
    concurrency = getattr(getattr(sender, "pool", None), "num_processes", None) or getattr(sender, "concurrency", 0)
    set_concurrency(int(concurrency or 0))


def set_concurrency(slots: int) -> None:
    """The worker's pool size changed (start, pool_grow/pool_shrink, autoscale)."""
    metrics.child(metrics.WORKER_CONCURRENCY, **node.labels()).set(slots)


@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    metrics.child(metrics.WORKER_UP, hostname=node.hostname()).set(0)


@signals.task_received.connect
def _on_received(request: Any = None, **_: Any) -> None:
    if request is not None:
        metrics.child(metrics.TASK_RECEIVED, **_task_labels(request.name, request.delivery_info)).inc()


@signals.task_prerun.connect
def _on_prerun(task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
    clear_task()  # a pool thread runs one task after another: start each with a clean context
    with _lock:
        _started[task_id or ""] = time.monotonic()
    metrics.child(metrics.WORKER_TASKS_ACTIVE, hostname=node.hostname()).inc()
    if task is not None:
        metrics.child(metrics.TASK_STARTED, **_task_labels(task.name, _request_info(task))).inc()
        if task.name in EXECUTE_TASKS and args:
            bind_task(taskId=args[0])


@signals.task_postrun.connect
def _on_postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    with _lock:
        started = _started.pop(task_id or "", None)
    metrics.child(metrics.WORKER_TASKS_ACTIVE, hostname=node.hostname()).dec()
    if task is not None:
        labels = _task_labels(task.name, _request_info(task))
        if state == "SUCCESS":
            metrics.child(metrics.TASK_SUCCEEDED, **labels).inc()
            if started is not None:
                metrics.child(metrics.TASK_RUNTIME, **labels).observe(time.monotonic() - started)
        elif state == "REJECTED":
            metrics.child(metrics.TASK_REJECTED, **labels).inc()
    clear_task()


@signals.task_failure.connect
def _on_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    if sender is not None:
        metrics.child(metrics.TASK_FAILED, exception=type(exception).__name__ if exception else "UnknownException",
                                   **_task_labels(sender.name, _request_info(sender))).inc()


@signals.task_revoked.connect
def _on_revoked(request: Any = None, **_: Any) -> None:
    if request is not None:
        metrics.child(metrics.TASK_REVOKED, **_task_labels(request.name, request.delivery_info)).inc()


@attempt_started.connect
def _on_attempt_started(sender: Any = None, context: dict[str, Any] | None = None, **_: Any) -> None:
    bind_task(**(context or {}))


@attempt_finished.connect
def _on_attempt_finished(sender: Any = None, outcome: Any = None, **_: Any) -> None:
    pool = str(getattr(sender, "task_type", "") or node.pool()).lower()
    metrics.record_attempt(pool, outcome_label(outcome))
