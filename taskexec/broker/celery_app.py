"""The one Celery app: typed queues, broker priorities, and at-least-once delivery settings."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from taskexec.broker import broker_redis
from taskexec.core.config import Settings
from taskexec.core.constants import CELERY_TASK_EXECUTE, CELERY_TASK_SWEEP, Priority, TaskType

# Redis emulates priorities with one list per step (kombu's default steps 0, 3, 6, 9) and reads 0 first;
# AMQP reads the highest first.
REDIS_PRIORITY = {Priority.CRITICAL: 0, Priority.HIGH: 3, Priority.MEDIUM: 6, Priority.LOW: 9}
AMQP_PRIORITY = {Priority.CRITICAL: 9, Priority.HIGH: 6, Priority.MEDIUM: 3, Priority.LOW: 0}


def is_amqp(broker_url: str) -> bool:
    return broker_url.startswith(("amqp", "pyamqp"))


def broker_priority(settings: Settings, priority: Priority | str) -> int:
    table = AMQP_PRIORITY if is_amqp(settings.broker_url) else REDIS_PRIORITY
    return table[Priority(priority)]


def make_celery(settings: Settings, name: str = "taskexec") -> Celery:
    """Build the app; producers (router, beat) and consumers (pools) share this configuration."""
    app = Celery(name, broker=settings.broker_url)
    queue_args = {"x-max-priority": 10} if is_amqp(settings.broker_url) else None
    queues = [Queue(q, routing_key=q, queue_arguments=queue_args) for q in settings.queues.values()]
    app.conf.update(
        task_queues=queues,
        task_default_queue=settings.queue_manual,
        task_routes={CELERY_TASK_EXECUTE[t]: {"queue": q} for t, q in settings.queues.items()},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        # No result backend (DisabledBackend): one instance for all threads. Without this Celery builds one per
        # thread on its first task (an entry-point scan, ~17 ms of CPU each here: 1 s for a 64-thread pool).
        result_backend_thread_safe=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # kombu's own `sep` and `priority_steps` on purpose: a client that does not load this app (a stock
        # Flower, `celery --broker=URL inspect ping`) must read the same keys and bindings (docs/operations.md).
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "queue_order_strategy": "priority",
        },
        # Task events (received/started/succeeded): `taskexec worker` starts its pools with -E, as Flower's docs
        # ask, so Flower shows a task even if it ran before Flower's first `enable_events` (`taskexec up` checks
        # the sample task that way); they cost the pool about 0.8 ms of CPU per task (py-spy). Off for
        # any other worker of this app until a monitor enables them. No task-sent events from the router: a
        # PENDING task is in the database (API, dashboard), and Flower lists it once a worker receives it.
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_default_priority=broker_priority(settings, Priority.MEDIUM),
    )
    if settings.broker_url.startswith(("redis://", "rediss://")):
        app.conf.broker_transport = broker_redis.TRANSPORT  # kombu's, reusing its Redis client (see there)
    return app


def execute_task_name(task_type: TaskType | str) -> str:
    return CELERY_TASK_EXECUTE[TaskType(task_type)]


__all__ = ["make_celery", "broker_priority", "execute_task_name", "CELERY_TASK_SWEEP"]
