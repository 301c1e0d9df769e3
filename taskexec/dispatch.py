"""Getting stored tasks onto the broker: the publisher, and the router's background dispatcher."""

from __future__ import annotations

import functools
import logging
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import requests
from celery import Celery
from sqlalchemy import Select, bindparam, select

from taskexec.celery_app import broker_priority, execute_task_name
from taskexec.config import Settings
from taskexec.constants import Status, TaskType
from taskexec.db import Database
from taskexec.exceptions import Unavailable
from taskexec.manager import mark_enqueued
from taskexec.models import TaskInstance, utcnow
from taskexec.outbox import deliver_due

if TYPE_CHECKING:
    from taskexec.sqs import SqsPublisher

log = logging.getLogger(__name__)
# Wake-ups closer together than this (one per finished task under load) are served by one dispatcher pass.
MIN_PASS_GAP_S = 0.1
# How often the dispatcher looks for PENDING tasks whose broker message went missing (`republish_overdue`).
OVERDUE_CHECK_S = 5.0


class Publisher:
    """Sends a task's execute message (task id and dispatch token only) to its typed queue."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings = settings
        self.app = app
        self.sqs: SqsPublisher | None = None
        if settings.sqs_queue_url:  # AUTOMATED tasks go to the serverless executor's SQS queue
            from taskexec.sqs import SqsPublisher

            self.sqs = SqsPublisher(settings)

    def publish(self, task_id: str, task_type: str, priority: str, token: str) -> None:
        if self.sqs is not None and task_type == TaskType.AUTOMATED.value:
            self.sqs.publish(task_id, token, priority)
            return
        self.app.send_task(
            execute_task_name(task_type),
            args=[task_id, token],
            queue=self.settings.queues[task_type],  # type: ignore[index]
            priority=broker_priority(self.settings, priority),
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        )

    def ping(self) -> bool:
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
        except Exception:
            return False
        return self.sqs is None or self.sqs.ping()


def publish_stored(db: Database, publisher: Publisher, task: TaskInstance) -> bool:
    """Publish one stored task and mark it enqueued; False (and left for the dispatcher) on broker failure."""
    try:
        publisher.publish(task.id, task.type, task.priority, task.dispatch_token or "")
    except Exception as exc:  # broker down: the dispatcher will publish it later
        log.warning("publish failed; dispatcher will retry", extra={"taskId": task.id, "error": str(exc)})
        return False
    try:
        with db.autocommit() as conn:  # a single UPDATE: no BEGIN/COMMIT round trips
            mark_enqueued(conn, task.id, task.dispatch_token or "")
    except Unavailable as exc:  # the task is stored and on the broker: still accepted (the client gets 201)
        log.warning("cannot mark task enqueued; the dispatcher will publish it again (a harmless duplicate)",
                    extra={"taskId": task.id, "error": str(exc)})
    return True


@functools.lru_cache(maxsize=8)
def _due(batch: int) -> Select[tuple[TaskInstance]]:
    """PENDING tasks not on the broker whose time has come (`:now`); built once, it runs on every pass."""
    return (
        select(TaskInstance)
        .where(
            TaskInstance.status == Status.PENDING.value,
            TaskInstance.enqueued_at.is_(None),
            TaskInstance.available_at <= bindparam("now"),
        )
        .order_by(TaskInstance.available_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )


def _publish_all(publisher: Publisher, rows: list[TaskInstance]) -> int:
    """Publish locked rows in order, stamping `enqueued_at`; stop at the first broker error (tried again later)."""
    count = 0
    for task in rows:
        try:
            publisher.publish(task.id, task.type, task.priority, task.dispatch_token or "")
        except Exception as exc:
            log.warning("dispatch failed", extra={"taskId": task.id, "error": str(exc)})
            break
        task.enqueued_at = utcnow()
        count += 1
    return count


def dispatch_due(db: Database, publisher: Publisher, batch: int = 100) -> int:
    """Publish PENDING tasks whose message is not on the broker yet (new after a broker outage, or a retry now due)."""
    with db.session() as s:
        return _publish_all(publisher, list(s.scalars(_due(batch), {"now": utcnow()})))


def republish_overdue(db: Database, publisher: Publisher, older_than_s: float, batch: int = 100) -> int:
    """Publish again PENDING tasks whose message went to the broker more than `older_than_s` (the broker's
    visibility timeout) ago and never started. A broker crash can lose such a message (Redis: writes not yet
    fsynced) or strand it in a consumer's unacked set until kombu's next visibility sweep (every ~100 s);
    the duplicate this may make is harmless: the router starts a dispatch once."""
    with db.session() as s:
        rows = list(s.scalars(
            select(TaskInstance)
            .where(TaskInstance.status == Status.PENDING.value,
                   TaskInstance.enqueued_at < utcnow() - timedelta(seconds=older_than_s))
            .order_by(TaskInstance.enqueued_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ))
        count = _publish_all(publisher, rows)
    if count:
        log.warning("published again: queued longer than the visibility timeout", extra={"count": count})
    return count


class Dispatcher(threading.Thread):
    """Router background loop: publish due tasks and deliver outbox events until stopped."""

    def __init__(self, db: Database, settings: Settings, publisher: Publisher) -> None:
        super().__init__(name="taskexec-dispatcher", daemon=True)
        self.db = db
        self.settings = settings
        self.publisher = publisher
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.http = requests.Session()
        self.overdue_at = 0.0  # next look for PENDING tasks whose message went missing

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            busy = False
            try:
                busy = dispatch_due(self.db, self.publisher) > 0
                busy = deliver_due(self.db, self.settings, self.http) > 0 or busy
                if started >= self.overdue_at:
                    self.overdue_at = started + OVERDUE_CHECK_S
                    republish_overdue(self.db, self.publisher, self.settings.visibility_timeout_s)
            except Exception:
                log.exception("dispatcher pass failed")
            if not busy:
                self.wake.wait(self.settings.outbox_poll_s)
                # Under load every finished task wakes us: serve a burst of wake-ups with one pass.
                rest = MIN_PASS_GAP_S - (time.monotonic() - started)
                if rest > 0:
                    self.stop_event.wait(rest)
                self.wake.clear()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
