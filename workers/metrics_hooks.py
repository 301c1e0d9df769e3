"""Celery signal hooks of a worker process: its Prometheus metrics, and the log context of each task.

Pools run Celery's thread pool, so a worker is one process: it serves its own registry on
`TEL_METRICS_PORT` (`taskexec worker <pool> --metrics-port N`; 0 disables) from `worker_init`,
with the probes `/health` and `/ready` (`workers/health.py`).
The pool is the node-name prefix `taskexec worker` gives (`automated@host`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from celery import signals

from taskexec import metrics
from taskexec.config import get_settings
from taskexec.constants import CELERY_TASK_EXECUTE, Status
from taskexec.logs import bind_task, clear_task
from taskexec.metrics_export import serve
from workers import health
from workers.signals import attempt_finished, attempt_started

log = logging.getLogger(__name__)
POOLS = ("automated", "manual", "integration")
EXECUTE_TASKS = frozenset(CELERY_TASK_EXECUTE.values())

_node = {"worker": socket.gethostname(), "pool": "unknown"}
_started: dict[str, float] = {}
_lock = threading.Lock()


def pool_of(hostname: str) -> str:
    prefix = hostname.split("@", 1)[0]
    return prefix if "@" in hostname and prefix in POOLS else "unknown"


def outcome_label(outcome: Any) -> str:
    """COMPLETED, CANCELLED, or the error code of a failed or timed-out attempt."""
    if outcome.status in (Status.COMPLETED.value, Status.CANCELLED.value):
        return str(outcome.status)
    if outcome.status == Status.PENDING.value:  # handed back to wait (e.g. a target's rate limit)
        return "DEFERRED"
    return str(outcome.error.code if outcome.error is not None else outcome.status)


def _labels() -> dict[str, str]:
    return {"worker": _node["worker"], "pool": _node["pool"]}


@signals.worker_init.connect
def _on_init(**_: Any) -> None:
    """Serve /metrics, /health and /ready from the start: liveness answers while the worker connects."""
    settings = get_settings()
    health.STATE.stale_after_s = settings.health_stale_s
    serve(settings.metrics_port, routes=health.routes())


@signals.worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    hostname = getattr(sender, "hostname", None) or _node["worker"]
    _node.update(worker=hostname, pool=pool_of(hostname))
    metrics.WORKER_ONLINE.labels(**_labels()).set(1)
    metrics.WORKER_EXECUTING.labels(**_labels()).set(0)


@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    metrics.WORKER_ONLINE.labels(**_labels()).set(0)


@signals.task_prerun.connect
def _on_prerun(task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
    clear_task()  # a pool thread runs one task after another: start each with a clean context
    with _lock:
        _started[task_id or ""] = time.monotonic()
    metrics.WORKER_EXECUTING.labels(**_labels()).inc()
    if task is not None and task.name in EXECUTE_TASKS and args:
        bind_task(taskId=args[0])


@signals.task_postrun.connect
def _on_postrun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    with _lock:
        started = _started.pop(task_id or "", None)
    metrics.WORKER_EXECUTING.labels(**_labels()).dec()
    if started is not None and task is not None:
        metrics.TASK_RUNTIME.labels(worker=_node["worker"], task=task.name).observe(time.monotonic() - started)
    clear_task()


@attempt_started.connect
def _on_attempt_started(sender: Any = None, context: dict[str, Any] | None = None, **_: Any) -> None:
    bind_task(**(context or {}))


@attempt_finished.connect
def _on_attempt_finished(sender: Any = None, outcome: Any = None, **_: Any) -> None:
    pool = str(getattr(sender, "task_type", "") or _node["pool"]).lower()
    metrics.record_attempt(pool, outcome_label(outcome))
