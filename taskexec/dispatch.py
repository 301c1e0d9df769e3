"""Getting stored tasks onto the broker: the publisher, and the router's background dispatcher."""

from __future__ import annotations

import logging
import threading

import requests
from celery import Celery
from sqlalchemy import select

from taskexec.celery_app import broker_priority, execute_task_name
from taskexec.config import Settings
from taskexec.constants import Status
from taskexec.db import Database
from taskexec.manager import mark_enqueued
from taskexec.models import TaskInstance, utcnow
from taskexec.outbox import deliver_due

log = logging.getLogger(__name__)


class Publisher:
    """Sends a task's execute message (task id and dispatch token only) to its typed queue."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings = settings
        self.app = app

    def publish(self, task_id: str, task_type: str, priority: str, token: str) -> None:
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
            return True
        except Exception:
            return False


def publish_stored(db: Database, publisher: Publisher, task: TaskInstance) -> bool:
    """Publish one stored task and mark it enqueued; False (and left for the dispatcher) on broker failure."""
    try:
        publisher.publish(task.id, task.type, task.priority, task.dispatch_token or "")
    except Exception as exc:  # broker down: the dispatcher will publish it later
        log.warning("publish failed; dispatcher will retry", extra={"taskId": task.id, "error": str(exc)})
        return False
    with db.session() as s:
        mark_enqueued(s, task.id, task.dispatch_token or "")
    return True


def dispatch_due(db: Database, publisher: Publisher, batch: int = 100) -> int:
    """Publish PENDING tasks whose message is not on the broker yet (new after a broker outage, or a retry now due)."""
    count = 0
    with db.session() as s:
        rows = list(
            s.scalars(
                select(TaskInstance)
                .where(
                    TaskInstance.status == Status.PENDING.value,
                    TaskInstance.enqueued_at.is_(None),
                    TaskInstance.available_at <= utcnow(),
                )
                .order_by(TaskInstance.available_at)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        )
        for task in rows:
            try:
                publisher.publish(task.id, task.type, task.priority, task.dispatch_token or "")
            except Exception as exc:
                log.warning("dispatch failed", extra={"taskId": task.id, "error": str(exc)})
                break
            task.enqueued_at = utcnow()
            count += 1
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

    def run(self) -> None:
        while not self.stop_event.is_set():
            busy = False
            try:
                busy = dispatch_due(self.db, self.publisher) > 0
                busy = deliver_due(self.db, self.settings, self.http) > 0 or busy
            except Exception:
                log.exception("dispatcher pass failed")
            if not busy:
                self.wake.wait(self.settings.outbox_poll_s)
                self.wake.clear()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
