"""The Celery app of the worker pools and the scheduler; execute tasks registered by type."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from taskexec.broker.celery_app import make_celery
from taskexec.core.config import get_settings
from taskexec.core.constants import CELERY_TASK_SWEEP
from taskexec.observability.logs import configure_logging, secrets_of
from workers import (
    consumer,
    metrics_hooks,  # noqa: F401 - Celery signal hooks: metrics and log context
    pool,
    wakeup,
)
from workers.automated import AutomatedTask
from workers.health import ConsumerHeartbeat
from workers.integration import IntegrationTask
from workers.manual import ManualTask

log = logging.getLogger(__name__)
settings = get_settings()
app = make_celery(settings, name="taskexec-workers")
app.conf.worker_consumer = consumer.CONSUMER  # a control command that fails cannot wedge the consumer
app.conf.worker_pool = pool.POOL  # Celery's threads pool, resizable (pool_grow/pool_shrink, --autoscale)
app.steps["consumer"].add(ConsumerHeartbeat)  # liveness/readiness of /health and /ready
app.steps["consumer"].add(wakeup.EventLoopWaker)  # the next message right after a late ack (threads pool + Redis)

for _cls in (AutomatedTask, ManualTask, IntegrationTask):
    app.register_task(_cls())


@app.task(name=CELERY_TASK_SWEEP, acks_late=True, ignore_result=True, Request=wakeup.REQUEST)
def sweep(name: str) -> Any:
    """A periodic job sent by `taskexec beat`, carried out by whichever pool consumes its queue."""
    from workers.scheduler import run_sweep

    return run_sweep(name)


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    configure_logging(settings.log_level, secrets_of(settings))
