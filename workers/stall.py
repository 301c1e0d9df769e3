"""The stall watchdog: a consumer that stops taking messages while its queue has work and it has room.

The heartbeat in `workers.health` proves that the consumer's event loop turns; it cannot see a loop
that turns without reading from the broker (a broker connection that went silent, or kombu's poller
left without the consumer's socket). This thread looks from the outside, over a connection of its
own: every `CHECK_INTERVAL_S` it reads how many messages wait on the queues the consumer consumes
now (`cancel_consumer` removes a queue from the watch) and how many of the pool's slots hold a
request. When messages wait and a slot is free, and no message has arrived for `stall_after_s`, the
worker is stalled: `/health` and `/ready` answer 503 (so Compose and Kubernetes replace it) and
`taskexec_worker_consumer_stalled` is 1. Any message that arrives clears it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from celery.worker import state as worker_state

from taskexec.broker.broker_stats import waiting
from taskexec.observability import metrics
from workers import node

log = logging.getLogger(__name__)
CHECK_INTERVAL_S = 5.0


class StallWatch:
    """Decides "stalled" from three facts: messages waiting, free slots, time since the last message."""

    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self.last_received = time.monotonic()
        self.waiting_since: float | None = None  # first check that saw work waiting and a free slot
        self.reason: str | None = None

    def received(self) -> None:
        """A message reached the consumer: it is taking work."""
        self.last_received = time.monotonic()
        self.waiting_since = None
        self.reason = None

    def observe(self, queued: dict[str, int], slots: int, busy: int) -> str | None:
        """One check; returns the stall reason, or None while the consumer keeps up."""
        now = time.monotonic()
        backlog = {q: n for q, n in queued.items() if n > 0}
        if not backlog or busy >= slots:
            self.waiting_since = None
            self.reason = None
            return None
        if self.waiting_since is None or self.waiting_since < self.last_received:
            self.waiting_since = max(now, self.last_received)
        idle = now - self.waiting_since
        if idle >= self.stall_after_s:
            self.reason = (f"consumer stalled: {sum(backlog.values())} message(s) waiting on "
                           f"{', '.join(sorted(backlog))}, {slots - busy} free slot(s), none taken for {idle:.0f} s")
        return self.reason


def watch(consumer: Any, stall: StallWatch, stop: threading.Event) -> None:
    """The watchdog thread's loop (started by `workers.health.ConsumerHeartbeat` while connected)."""
    conn = consumer.app.connection_for_read()
    try:
        while not stop.wait(CHECK_INTERVAL_S):
            queues = [q.name for q in getattr(consumer.task_consumer, "queues", None) or []]
            if not queues:
                continue
            try:
                conn.ensure_connection(max_retries=1, timeout=2)
                queued = {q: sum(per.values()) for q, per in waiting(conn, queues).items()}
            except Exception as exc:  # broker unreachable: the consumer's own reconnect logic owns that
                log.debug("stall watch: queue depth unavailable", extra={"error": str(exc)})
                with contextlib.suppress(Exception):
                    conn.close()
                conn = consumer.app.connection_for_read()
                continue
            slots = int(getattr(consumer.pool, "num_processes", 0) or 0)
            was = stall.reason
            reason = stall.observe(queued, slots, len(worker_state.reserved_requests))
            if reason and not was:
                log.error(reason, extra={"queues": queues})
            metrics.WORKER_CONSUMER_STALLED.labels(**node.labels()).set(1 if reason else 0)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
