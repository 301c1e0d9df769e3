"""Getting stored tasks onto the broker: the publisher, and the router's background dispatcher."""

from __future__ import annotations

import bisect
import functools
import logging
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery import Celery
from sqlalchemy import Select, bindparam, select, text
from sqlalchemy.types import DateTime

from taskexec.broker.celery_app import broker_priority, execute_task_name
from taskexec.core.config import Settings
from taskexec.core.constants import Status, TaskType
from taskexec.core.exceptions import Unavailable
from taskexec.services.manager import mark_enqueued
from taskexec.services.outbox import Deliverer, deliver_due
from taskexec.store.db import Database
from taskexec.store.models import TaskInstance, utcnow

if TYPE_CHECKING:
    from taskexec.broker.sqs import SqsPublisher

log = logging.getLogger(__name__)
# After a pass that delivered n events the next waits n x PASS_GAP_PER_EVENT_S (at most MAX_PASS_GAP_S) from its
# start: at rest a wake-up (a finished task) is served at once; under load, when every finished task wakes the
# dispatcher, a burst of wake-ups is served by one pass.
PASS_GAP_PER_EVENT_S = 0.005
MAX_PASS_GAP_S = 0.1
# Tasks due again (retries, deferrals) are looked for at most this often.
DISPATCH_EVERY_S = 0.25
# Tasks published, and outbox queues delivered, per pass at most.
PASS_BATCH = 100
# A published task's `enqueued_at` is written this long after its publish, at the dispatcher's next pass
# (passes are at most a third of this apart while marks wait: within 2 s, inside PUBLISH_GRACE; see
# EnqueueMarks). Most tasks have started by then, and a started task needs no mark: the UPDATE skips it, and
# PostgreSQL writes no row version (nor its index entries) for it. Measured
# under bench/throughput.py: 106-107 WAL records a task unheld, 102-104 held 0.5 s, 94-95 held 1.5 s.
MARK_HOLD_S = 1.5
# How often the dispatcher looks for PENDING tasks whose broker message went missing (`republish_overdue`).
OVERDUE_CHECK_S = 5.0


class Publisher:
    """Sends a task's execute message (task id and dispatch token only) to its typed queue."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings = settings
        self.app = app
        self.sqs: SqsPublisher | None = None
        if settings.sqs_queue_url:  # AUTOMATED tasks go to the serverless executor's SQS queue
            from taskexec.broker.sqs import SqsPublisher

            self.sqs = SqsPublisher(settings)

    def publish(self, task_id: str, task_type: str, priority: str, token: str, producer: Any = None) -> None:
        if self.sqs is not None and task_type == TaskType.AUTOMATED.value:
            self.sqs.publish(task_id, token, priority)
            return
        self.app.send_task(
            execute_task_name(task_type),
            args=[task_id, token],
            # what Flower and `celery inspect` show: the task id, not the dispatch token (no saferepr either)
            argsrepr=f"['{task_id}', '***']",
            kwargsrepr="{}",
            queue=self.settings.queues[task_type],  # type: ignore[index]
            priority=broker_priority(self.settings, priority),
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
            producer=producer,
        )

    def producer(self) -> Any:
        """One producer (and broker connection) for many `publish` calls: `with publisher.producer() as p:`."""
        return self.app.producer_or_acquire()

    def ping(self) -> bool:
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
        except Exception:
            return False
        return self.sqs is None or self.sqs.ping()


def publish_stored(db: Database, publisher: Publisher, task: TaskInstance) -> bool:
    """Publish one stored task and mark it enqueued; False (and left for the dispatcher) on broker failure."""
    return bool(publish_new(db, publisher, [(task.id, task.type, task.priority, task.dispatch_token or "")]))


def publish_new(db: Database, publisher: Publisher, tasks: Sequence[tuple[str, str, str, str]],
                marks: EnqueueMarks | None = None) -> int:
    """Publish just-stored tasks (id, type, priority, token) in order and mark them enqueued; returns how
    many reached the broker. A broker failure leaves the rest to the dispatcher. With `marks` (a router
    running its dispatcher) the marks are written by the dispatcher, many in one statement."""
    published: list[tuple[str, str]] = []
    if not tasks:
        return 0
    try:
        with publisher.producer() as producer:
            for task_id, task_type, priority, token in tasks:
                publisher.publish(task_id, task_type, priority, token, producer)
                published.append((task_id, token))
    except Exception as exc:  # broker down: the dispatcher will publish the rest later
        log.warning("publish failed; dispatcher will retry", extra={"count": len(tasks) - len(published),
                                                                     "error": str(exc)})
    if marks is not None:
        marks.add(published)
    else:
        mark_now(db, published)
    return len(published)


def mark_now(db: Database, published: Sequence[tuple[str, str]]) -> None:
    """Mark tasks enqueued now; the task is stored and on the broker whatever happens here (still accepted)."""
    if not published:
        return
    try:
        with db.autocommit() as conn:  # a single UPDATE: no BEGIN/COMMIT round trips
            if len(published) == 1:
                for task_id, token in published:
                    mark_enqueued(conn, task_id, token)
            else:
                conn.execute(_MARK_MANY, {"ids": [p[0] for p in published], "tokens": [p[1] for p in published],
                                          "now": utcnow()})
    except Unavailable as exc:
        log.warning("cannot mark tasks enqueued; the dispatcher will publish them again (harmless duplicates)",
                    extra={"count": len(published), "error": str(exc)})


_MARK_MANY = text(
    "UPDATE task_instances t SET enqueued_at = :now "
    "FROM unnest(CAST(:ids AS varchar[]), CAST(:tokens AS varchar[])) AS u(id, token) "
    "WHERE t.id = u.id AND t.dispatch_token = u.token AND t.enqueued_at IS NULL AND t.status = 'PENDING'"
).bindparams(bindparam("now", type_=DateTime(timezone=True)))


class EnqueueMarks:
    """`enqueued_at` of published tasks, written by the dispatcher thread in one statement per pass.

    The mark only tells the dispatcher not to publish a PENDING task again. A new task is due for that only
    PUBLISH_GRACE (5 s) after its creation, so a mark is held MARK_HOLD_S first: by then most tasks are
    RUNNING or finished, and the UPDATE leaves them alone (a task put back to wait gets a new dispatch
    token and an empty mark anyway). If the router dies before a mark is written, the task is published
    once more and `start` refuses the duplicate."""

    def __init__(self, hold_s: float = MARK_HOLD_S) -> None:
        self.hold_s = hold_s
        self._lock = threading.Lock()
        self._pending: list[tuple[float, str, str]] = []  # (when published, task id, dispatch token), in order

    def add(self, published: Sequence[tuple[str, str]]) -> None:
        now = time.monotonic()
        with self._lock:
            self._pending.extend((now, task_id, token) for task_id, token in published)

    def pending(self) -> bool:
        return bool(self._pending)

    def flush(self, db: Database, everything: bool = False) -> int:
        """Write the marks held long enough (all of them with `everything`); returns how many were due."""
        due_before = time.monotonic() - self.hold_s
        with self._lock:
            n = len(self._pending) if everything else bisect.bisect_right(self._pending, (due_before, "\uffff"))
            due, self._pending = self._pending[:n], self._pending[n:]
        mark_now(db, [(task_id, token) for _, task_id, token in due])
        return len(due)


@functools.lru_cache(maxsize=8)
def _due(batch: int) -> Select[TaskInstance]:
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


@functools.lru_cache(maxsize=8)
def _overdue(batch: int) -> Select[TaskInstance]:
    """PENDING tasks whose message went to the broker before `:before` (`republish_overdue`); built once."""
    return (
        select(TaskInstance)
        .where(TaskInstance.status == Status.PENDING.value, TaskInstance.enqueued_at < bindparam("before"))
        .order_by(TaskInstance.enqueued_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )


@functools.lru_cache(maxsize=1)
def _any_due() -> Select[str]:
    """Is any task due for `dispatch_due`? (its conditions, one id, no lock)"""
    return select(TaskInstance.id).where(*_due(1).whereclause.clauses).limit(1)  # type: ignore[union-attr]


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
    """Publish PENDING tasks whose message is not on the broker yet (new after a broker outage, or a retry now due).

    Runs on every dispatcher pass, mostly to find nothing: a one-row look without a transaction comes first."""
    now = utcnow()
    with db.autocommit() as conn:
        if conn.execute(_any_due(), {"now": now}).first() is None:
            return 0
    with db.session() as s:
        return _publish_all(publisher, list(s.scalars(_due(batch), {"now": utcnow()})))


def republish_overdue(db: Database, publisher: Publisher, older_than_s: float, batch: int = 100) -> int:
    """Publish again PENDING tasks whose message went to the broker more than `older_than_s` (the broker's
    visibility timeout) ago and never started. A broker crash can lose such a message (Redis: writes not yet
    fsynced) or strand it in a consumer's unacked set until kombu's next visibility sweep (every ~100 s);
    the duplicate this may make is harmless: the router starts a dispatch once."""
    with db.session() as s:
        rows = list(s.scalars(_overdue(batch), {"before": utcnow() - timedelta(seconds=older_than_s)}))
        count = _publish_all(publisher, rows)
    if count:
        log.warning("published again: queued longer than the visibility timeout", extra={"count": count})
    return count


class Dispatcher(threading.Thread):
    """Router background loop: mark published tasks, publish due tasks and deliver outbox events until stopped."""

    def __init__(self, db: Database, settings: Settings, publisher: Publisher, deliverer: Deliverer) -> None:
        super().__init__(name="taskexec-dispatcher", daemon=True)
        self.db = db
        self.settings = settings
        self.publisher = publisher
        self.deliverer = deliverer
        self.marks = EnqueueMarks()
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.overdue_at = 0.0  # next look for PENDING tasks whose message went missing
        self.dispatch_at = 0.0  # next look for PENDING tasks that are due
        self.callbacks = CallbackSender(db, settings, Deliverer(settings))

    def start(self) -> None:
        super().start()
        self.callbacks.start()

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            busy = False
            delivered = 0
            try:
                # events first (a wake-up is mostly a finished task whose events wait), then the bookkeeping;
                # a full pass means more is waiting: go on at once; else wait for a wake-up (a gap apart)
                delivered = deliver_due(self.db, self.settings, self.deliverer, PASS_BATCH, callbacks=False)
                busy = delivered >= PASS_BATCH
                self.marks.flush(self.db)
                if started >= self.dispatch_at:
                    self.dispatch_at = started + DISPATCH_EVERY_S
                    busy = dispatch_due(self.db, self.publisher, PASS_BATCH) >= PASS_BATCH or busy
                if started >= self.overdue_at:
                    self.overdue_at = started + OVERDUE_CHECK_S
                    republish_overdue(self.db, self.publisher, self.settings.visibility_timeout_s)
            except Exception:
                log.exception("dispatcher pass failed")
            if not busy:
                poll = self.settings.outbox_poll_s
                self.wake.wait(min(poll, MARK_HOLD_S / 3) if self.marks.pending() else poll)
                rest = min(MAX_PASS_GAP_S, delivered * PASS_GAP_PER_EVENT_S) - (time.monotonic() - started)
                if rest > 0:
                    self.stop_event.wait(rest)
                self.wake.clear()
        self.marks.flush(self.db, everything=True)

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
        self.callbacks.stop()


class CallbackSender(threading.Thread):
    """Delivers the events for tasks' callback URLs, apart from the dispatcher.

    A callback URL is a user's receiver: when it hangs, each call waits up to the delivery timeout, and the pass
    holding it waits for it. On its own thread, with its own connections, such a receiver delays only other
    callbacks: the orchestrator's events, the notifications and the dispatcher's bookkeeping go on."""

    def __init__(self, db: Database, settings: Settings, deliverer: Deliverer) -> None:
        super().__init__(name="taskexec-callbacks", daemon=True)
        self.db = db
        self.settings = settings
        self.deliverer = deliverer
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            delivered = 0
            try:
                delivered = deliver_due(self.db, self.settings, self.deliverer, PASS_BATCH, callbacks=True)
            except Exception:
                log.exception("callback delivery pass failed")
            if delivered < PASS_BATCH:
                self.stop_event.wait(self.settings.outbox_poll_s)

    def stop(self) -> None:
        self.stop_event.set()
