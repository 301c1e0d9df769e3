"""The one Celery app: typed queues, broker priorities, and at-least-once delivery settings."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from taskexec.config import Settings
from taskexec.constants import CELERY_TASK_EXECUTE, CELERY_TASK_SWEEP, Priority, TaskType

# Redis emulates priorities with one list per step and reads 0 first; AMQP reads the highest first.
_REDIS_PRIORITY = {Priority.CRITICAL: 0, Priority.HIGH: 3, Priority.MEDIUM: 6, Priority.LOW: 9}
_AMQP_PRIORITY = {Priority.CRITICAL: 9, Priority.HIGH: 6, Priority.MEDIUM: 3, Priority.LOW: 0}


def is_amqp(broker_url: str) -> bool:
    return broker_url.startswith(("amqp", "pyamqp"))


def broker_priority(settings: Settings, priority: Priority | str) -> int:
    table = _AMQP_PRIORITY if is_amqp(settings.broker_url) else _REDIS_PRIORITY
    return table[Priority(priority)]


_KOMBU_SEP = "\x06\x16"  # kombu's default separator of the fields of a Redis binding


def _read_bindings_of_any_separator() -> None:
    """Let our processes read exchange bindings written with kombu's default separator as well as ours.

    Our Redis transport options set `sep` to ":" (the KEDA list names depend on it). A Celery client
    without them (`celery -b redis://... inspect`, a Flower started that way) binds its reply queue with
    the default separator; a worker answering it split that binding into one field and failed, and
    Celery then reset the worker's control consumer, after which the worker took no more tasks (seen on
    the shared test Redis). Read both forms: such a client gets its answer and the worker carries on."""
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.Channel.get_table
    if getattr(original, "tel_any_separator", False):
        return

    def get_table(self: Any, exchange: str) -> list[tuple[str, ...]]:
        rows = []
        for row in original(self, exchange):
            if len(row) != 3:  # not our separator: try kombu's default
                row = tuple(self.sep.join(row).split(_KOMBU_SEP))
            if len(row) == 3:
                rows.append(row)
        return rows

    get_table.tel_any_separator = True  # type: ignore[attr-defined]
    kombu_redis.Channel.get_table = get_table


def make_celery(settings: Settings, name: str = "taskexec") -> Celery:
    """Build the app; producers (router, beat) and consumers (pools) share this configuration."""
    _read_bindings_of_any_separator()
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
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
            "sep": ":",
        },
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_default_priority=broker_priority(settings, Priority.MEDIUM),
    )
    return app


def execute_task_name(task_type: TaskType | str) -> str:
    return CELERY_TASK_EXECUTE[TaskType(task_type)]


def __getattr__(name: str) -> Celery:
    """`celery -A taskexec.celery_app inspect ...` and Flower: the operator's tools with our broker settings
    (a plain `celery -b <redis>` does not know our Redis transport options; see `make_celery`)."""
    if name in ("app", "celery"):
        from taskexec.config import get_settings

        return make_celery(get_settings())
    raise AttributeError(name)


__all__ = ["make_celery", "broker_priority", "execute_task_name", "CELERY_TASK_SWEEP"]
