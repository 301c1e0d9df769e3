"""Gauges computed when the router is scraped: queue lengths, workers per queue, open tasks, outbox backlog,
manual tasks by deadline.

They describe the current state, read from the broker and the database at scrape time, so every router
process reports the same values (no multiprocess bookkeeping) and a router restart loses nothing.
A source that cannot be read (broker or database down) is left out of that scrape and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from taskexec.broker.broker_stats import BrokerStats
from taskexec.core.constants import DEADLETTER, OutboxTarget, Status
from taskexec.observability import metrics
from taskexec.store import stats
from taskexec.store.db import Database

log = logging.getLogger(__name__)


class StateCollector:
    """A prometheus_client custom collector over the broker and the database."""

    def __init__(self, db: Database, broker: BrokerStats) -> None:
        self.db = db
        self.broker = broker

    def collect(self) -> Iterator[Any]:
        yield from self._broker_families()
        yield from self._database_families()

    def _broker_families(self) -> Iterator[Any]:
        try:
            per_priority = self.broker.priority_lengths()
        except Exception as exc:
            log.warning("scrape: queue lengths unavailable", extra={"error": str(exc)})
        else:
            family = GaugeMetricFamily(metrics.CELERY_QUEUE_LENGTH, "The number of messages in broker queue.",
                                       labels=["queue_name"])
            by_priority = GaugeMetricFamily(metrics.QUEUE_LENGTH_BY_PRIORITY,
                                            "Messages waiting per queue and priority (RabbitMQ: priority ALL).",
                                            labels=["queue_name", "priority"])
            for queue, counts in per_priority.items():
                family.add_metric([queue], sum(counts.values()))
                for priority, n in counts.items():
                    by_priority.add_metric([queue, priority], n)
            yield family
            yield by_priority
        workers, ok = self.broker.workers()
        if not ok:
            return
        count = GaugeMetricFamily(metrics.CELERY_ACTIVE_WORKER_COUNT, "The number of active workers in broker queue.",
                                  labels=["queue_name"])
        procs = GaugeMetricFamily(metrics.CELERY_ACTIVE_PROCESS_COUNT,
                                  "The number of active processes (summed concurrency) in broker queue.",
                                  labels=["queue_name"])
        for pool, queue in self.broker.queue_names.items():
            if pool == DEADLETTER:
                continue
            consuming = [w for w in workers if queue in w.queues]
            count.add_metric([queue], len(consuming))
            procs.add_metric([queue], sum(w.concurrency for w in consuming))
        yield count
        yield procs

    def _database_families(self) -> Iterator[Any]:
        try:
            with self.db.session() as s:
                open_now = stats.open_counts(s)
                backlog = stats.outbox_backlog(s)
                deadlines = stats.manual_deadline_counts(s)
        except Exception as exc:
            log.warning("scrape: database unavailable", extra={"error": str(exc)})
            return
        tasks = GaugeMetricFamily(metrics.TASKS_OPEN, "Open tasks in the database by type and status.",
                                  labels=["type", "status"])
        for kind, per_status in open_now.items():
            for status in (Status.PENDING, Status.ASSIGNED, Status.RUNNING):
                tasks.add_metric([kind, status.value], per_status.get(status, 0))
        yield tasks
        size = GaugeMetricFamily(metrics.OUTBOX_BACKLOG, "Outbound events not delivered yet.", labels=["target"])
        age = GaugeMetricFamily(metrics.OUTBOX_OLDEST_AGE, "Age of the oldest undelivered outbound event.",
                                labels=["target"])
        for target in OutboxTarget:
            row = next((b for b in backlog if b["target"] == target), None)
            size.add_metric([target], row["count"] if row else 0)
            age.add_metric([target], (row["oldestAgeSeconds"] or 0.0) if row else 0.0)
        for row in backlog:
            if row["target"] not in tuple(OutboxTarget):
                size.add_metric([row["target"]], row["count"])
                age.add_metric([row["target"]], row["oldestAgeSeconds"] or 0.0)
        yield size
        yield age
        due = GaugeMetricFamily(metrics.MANUAL_TASKS_BY_DEADLINE,
                                "Open manual tasks by deadline: overdue, due_1h, due_24h, later, none (no deadline).",
                                labels=["state"])
        for state, n in deadlines.items():
            due.add_metric([state], n)
        yield due
