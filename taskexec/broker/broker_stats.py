"""What the broker knows: messages waiting per queue, and the workers consuming each queue.

Queue length: Redis keeps one list per priority step (kombu's `<queue>`, then `<queue>` + sep + step, see
`taskexec.broker.celery_app`), so the length is the sum of their `LLEN`; on RabbitMQ it is the passive
`queue_declare` message count. Workers: one `active_queues` broadcast (as celery-exporter
does) plus an addressed `stats` broadcast for each worker's concurrency, cached for `ttl` seconds because a
broadcast waits for its full timeout. Only workers consuming this deployment's queues are counted, so
several deployments (or test stacks) may share one broker.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from celery import Celery
from kombu import Connection
from kombu.transport import redis as kombu_redis

from taskexec.broker.celery_app import REDIS_PRIORITY
from taskexec.core.config import Settings
from taskexec.core.constants import DEADLETTER, Priority

log = logging.getLogger(__name__)


@dataclass
class WorkerInfo:
    """A worker seen on the broker: its node name, pool, queues and concurrency."""

    name: str
    pool: str
    queues: list[str] = field(default_factory=list)
    concurrency: int = 0


class BrokerStats:
    """Queue lengths (read each call) and the worker list (cached)."""

    def __init__(self, settings: Settings, app: Celery, ttl: float = 10.0, timeout: float = 1.0) -> None:
        self.settings = settings
        self.app = app
        self.ttl = ttl
        self.timeout = timeout
        self._lock = threading.Lock()
        self._workers: list[WorkerInfo] = []
        self._workers_at = 0.0
        self._workers_ok = False

    @property
    def queue_names(self) -> dict[str, str]:
        """pool -> queue name, the dead-letter queue included."""
        names = {t.value.lower(): q for t, q in self.settings.queues.items()}
        names[DEADLETTER] = self.settings.queue_deadletter
        return names

    def queue_lengths(self) -> dict[str, int]:
        """Messages waiting per queue name; raises if the broker is unreachable."""
        return {q: sum(per.values()) for q, per in self.priority_lengths().items()}

    def priority_lengths(self) -> dict[str, dict[str, int]]:
        """Messages waiting per queue name and priority (LOW..CRITICAL; RabbitMQ: one total under "ALL")."""
        with self.app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            return waiting(conn, self.queue_names.values())

    def workers(self) -> tuple[list[WorkerInfo], bool]:
        """Workers consuming our queues, and whether the last broadcast succeeded (cached for `ttl`)."""
        with self._lock:
            if time.monotonic() - self._workers_at >= self.ttl:
                self._workers, self._workers_ok = self._inspect()
                self._workers_at = time.monotonic()
            return list(self._workers), self._workers_ok

    def _inspect(self) -> tuple[list[WorkerInfo], bool]:
        ours = {q: pool for pool, q in self.queue_names.items()}
        control = self.app.control
        try:
            # raw replies, not inspect(): two workers with the same node name (e.g. on one host) both count.
            # One broadcast at a time: concurrent ones share the reply queue and steal each other's replies.
            consuming: list[tuple[str, list[str]]] = []
            for reply in control.broadcast("active_queues", reply=True, timeout=self.timeout) or []:
                for name, queues in reply.items():
                    mine = [q["name"] for q in queues or [] if q.get("name") in ours]
                    if mine:
                        consuming.append((name, mine))
            concurrency: dict[str, int] = {}
            if consuming:  # addressed and limited: returns as soon as every worker answered
                names = sorted({name for name, _ in consuming})
                for reply in control.broadcast("stats", reply=True, timeout=self.timeout, destination=names,
                                               limit=len(consuming)) or []:
                    for name, st in reply.items():
                        pool_stats = (st or {}).get("pool") or {}
                        n = pool_stats.get("max-concurrency") or len(pool_stats.get("processes") or []) or 0
                        concurrency.setdefault(name, int(n))
        except Exception as exc:  # broker down: report nothing rather than fail the page or the scrape
            log.warning("worker inspection failed", extra={"error": str(exc)})
            return [], False
        found = [WorkerInfo(name=name, pool=ours[mine[0]], queues=mine, concurrency=concurrency.get(name, 0))
                 for name, mine in sorted(consuming)]
        return found, True


def waiting(conn: Connection, queues: Iterable[str]) -> dict[str, dict[str, int]]:
    """Messages waiting on the broker of an open connection, per queue and priority.

    Redis: one `LLEN` per priority list, in one pipeline (the keys kombu's own channel uses). RabbitMQ
    keeps priorities inside one queue, so its count is the passive declare's total under "ALL".
    """
    names = list(queues)
    if conn.transport.driver_type == "amqp":
        return {q: {"ALL": _amqp_length(conn, q)} for q in names}
    channel = cast(kombu_redis.Channel, conn.default_channel)  # the driver checked above
    pipe = channel.client.pipeline()
    for q in names:
        for priority in Priority:
            pipe.llen(channel._q_for_pri(q, REDIS_PRIORITY[priority]))
    counts = iter(pipe.execute())
    return {q: {p.value: int(next(counts)) for p in Priority} for q in names}


def _amqp_length(conn: Any, queue: str) -> int:
    channel = conn.channel()  # a failed passive declare closes its channel: one per queue
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except Exception:  # not declared yet: nothing waiting
        return 0
    finally:
        with contextlib.suppress(Exception):
            channel.close()
