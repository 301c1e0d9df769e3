"""Load shedding: when a queue is too deep, LOW (then MEDIUM) submissions to it get 503 while HIGH and
CRITICAL are still accepted.

A `before_request` hook, for routes declared with :func:`sheddable` (task submission). Queue depths are read
from the broker the way `/metrics` reads them (`taskexec.broker.broker_stats`), in a background thread at most
every `TEL_SHED_CHECK_INTERVAL` (2 s), so a request only reads a dict; while no queue is over a threshold
nothing else happens. Over `TEL_SHED_LOW_QUEUE_DEPTH` messages (10,000) LOW submissions to that queue are
refused, over `TEL_SHED_MEDIUM_QUEUE_DEPTH` (50,000) MEDIUM ones too: 503 `UNAVAILABLE` with
`Retry-After: TEL_SHED_RETRY_AFTER`. A queue's type comes from the definition (cached a minute). When the
broker cannot be read, nothing is shed (the submission itself then reports the broker).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flask import Flask, current_app, g, request
from sqlalchemy import select

from api.runtime import runtime
from taskexec.broker.broker_stats import BrokerStats
from taskexec.core.config import Settings
from taskexec.core.constants import Priority, TaskType
from taskexec.core.exceptions import Unavailable
from taskexec.observability import metrics
from taskexec.store.auth import Principal
from taskexec.store.models import TaskDefinition

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
Extract = Callable[[Any], Iterable[tuple[str, str]]]
EXTENSION = "taskexec.shedding"
TYPE_CACHE_S = 60.0


def single_submission(body: Any) -> list[tuple[str, str]]:
    """(definition id, priority) of a `POST /api/v1/tasks` body."""
    if not isinstance(body, dict) or not isinstance(body.get("taskDefinitionId"), str):
        return []
    return [(body["taskDefinitionId"], str(body.get("priority") or Priority.MEDIUM.value))]


def batch_submissions(body: Any) -> list[tuple[str, str]]:
    """(definition id, priority) of each item of a `POST /api/v1/tasks/batch` body."""
    items = body.get("tasks") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return []
    return [pair for item in items for pair in single_submission(item)]


def sheddable(extract: Extract = single_submission) -> Callable[[F], F]:
    """Declare a route a task submission that may be shed; `extract` lists the (definition id, priority) pairs
    its JSON body submits (a batch route lists each item: the request is refused if any item would be)."""

    def mark(view: F) -> F:
        view.shed_extract = extract  # type: ignore[attr-defined]
        return view

    return mark


class QueueDepths:
    """Messages waiting per queue, refreshed in the background; `current()` never waits for the broker."""

    def __init__(self, stats: BrokerStats, interval_s: float) -> None:
        self.stats = stats
        self.interval_s = interval_s
        self._depths: dict[str, int] = {}
        self._at = float("-inf")
        self._refreshing = False
        self._lock = threading.Lock()

    def current(self) -> dict[str, int]:
        with self._lock:
            due = not self._refreshing and time.monotonic() - self._at >= self.interval_s
            if due:
                self._refreshing = True
        if due:
            threading.Thread(target=self._refresh, name="queue-depths", daemon=True).start()
        return self._depths

    def _refresh(self) -> None:
        try:
            depths = self.stats.queue_lengths()
        except Exception as exc:  # broker down: shed nothing rather than act on stale numbers
            log.warning("load shedding: queue depths unavailable", extra={"error": str(exc)})
            depths = {}
        with self._lock:
            self._depths, self._at, self._refreshing = depths, time.monotonic(), False


class Shedder:
    """Decides, per submission, whether its queue is too deep for its priority."""

    def __init__(self, settings: Settings, stats: BrokerStats) -> None:
        self.settings = settings
        self.depths = QueueDepths(stats, settings.shed_check_interval_s)
        self._types: dict[str, tuple[str, float]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.settings.shed_low_queue_depth or self.settings.shed_medium_queue_depth)

    def threshold(self, priority: Priority) -> int:
        """Depth above which `priority` is shed (0: never)."""
        if priority is Priority.LOW:
            return self.settings.shed_low_queue_depth or self.settings.shed_medium_queue_depth
        if priority is Priority.MEDIUM:
            return self.settings.shed_medium_queue_depth
        return 0

    def overloaded(self) -> dict[str, int]:
        """Queues deeper than the lowest shedding threshold, with their depth."""
        floor = min(t for t in (self.settings.shed_low_queue_depth, self.settings.shed_medium_queue_depth) if t)
        return {q: n for q, n in self.depths.current().items() if n > floor}

    def queue_of(self, def_id: str) -> str | None:
        cached = self._types.get(def_id)
        if cached and cached[1] > time.monotonic():
            task_type = cached[0]
        else:
            with runtime().db.session() as s:
                found = s.scalar(select(TaskDefinition.type).where(TaskDefinition.id == def_id)
                                 .order_by(TaskDefinition.version.desc()).limit(1))
            if found is None:
                return None  # the route answers 404
            task_type = found
            self._types[def_id] = (task_type, time.monotonic() + TYPE_CACHE_S)
        return self.settings.queues[TaskType(task_type)]

    def check(self, pairs: Iterable[tuple[str, str]], over: dict[str, int]) -> None:
        for def_id, raw in pairs:
            try:
                priority = Priority(raw)
            except ValueError:
                continue  # the route answers 400
            limit = self.threshold(priority)
            if not limit:
                continue
            queue = self.queue_of(def_id)
            if queue is None or over.get(queue, 0) <= limit:
                continue
            g.retry_after = self.settings.shed_retry_after_s
            metrics.child(metrics.API_SHED, queue=queue, priority=priority.value).inc()
            raise Unavailable(
                f"queue {queue} holds {over[queue]} messages, over the shedding threshold of {limit} for "
                f"{priority.value} tasks: retry in {self.settings.shed_retry_after_s} s or submit with a "
                "higher priority",
                details={"queue": queue, "depth": over[queue], "threshold": limit, "priority": priority.value,
                         "retryAfterSeconds": self.settings.shed_retry_after_s})


def install(app: Flask, settings: Settings, stats: Callable[[], BrokerStats]) -> None:
    app.extensions[EXTENSION] = (settings, stats)
    app.before_request(shed_submission)


def shedder() -> Shedder:
    ext = current_app.extensions
    if not isinstance(ext[EXTENSION], Shedder):
        settings, stats = ext[EXTENSION]
        ext[EXTENSION] = Shedder(settings, stats())
    return ext[EXTENSION]


def shed_submission() -> None:
    """`before_request`: 503 for a LOW/MEDIUM submission whose queue is over its threshold."""
    if request.method != "POST" or not request.endpoint:
        return
    view = current_app.view_functions.get(request.endpoint)
    extract: Extract | None = getattr(view, "shed_extract", None)
    principal = g.get("auth_result")
    if extract is None or not isinstance(principal, Principal):
        return  # not a submission, or unauthenticated: the route answers 401 (never a 503 first)
    permission = getattr(view, "permission", None)
    if permission is not None and not principal.has(permission):
        return  # the route answers 403
    shed = shedder()
    if not shed.enabled:
        return
    over = shed.overloaded()
    if not over:
        return
    shed.check(extract(request.get_json(force=True, silent=True)), over)
