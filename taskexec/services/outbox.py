"""Outbox delivery: POST each stored event at least once, in order per task and target, with backoff.

One pass (`deliver_due`) locks the *heads* of up to `batch` queues, a queue being the undelivered rows
of one (task, target, url) in id order and its head the oldest of them, due now. Locking the head with
``FOR UPDATE SKIP LOCKED`` makes this router process the queue's only sender for the pass: another
process skips the locked head and never takes a later row, since a row is a head only when nothing
older of its queue is undelivered. The pass then sends each queue's rows in order, stopping at the
first failure (which backs off), and the queues concurrently on `Deliverer.threads` kept-alive
connections; it deletes what arrived with one DELETE and commits (so every row is undelivered; a task's
events stay in `task_events`). A task's created, started and
completed events therefore go out in one pass, and many tasks' events at once. Each carries the
`X-Request-Id` and `traceparent` (same trace, a new span) of the request that submitted its task.
Only a task's callback event is ever given up: one still failing after TEL_CALLBACK_MAX_AGE is deleted
on that failure (logged, counted as `abandoned`), since a user's receiver may be gone for good.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import BigInteger, DateTime

from taskexec.clients.keepalive import KeepAlive
from taskexec.core.config import Settings
from taskexec.core.constants import OutboxTarget
from taskexec.core.exceptions import DestinationNotAllowed
from taskexec.observability import tracing
from taskexec.observability.metrics import record_outbox_abandoned, record_outbox_delivery
from taskexec.services import callbacks
from taskexec.store.db import Database
from taskexec.store.events import sign
from taskexec.store.models import utcnow

log = logging.getLogger(__name__)
DELIVERY_TIMEOUT = (3.05, 10)
DELIVERY_THREADS = 8  # queues sent at once by one router process
MAX_ANSWER = 64 * 1024  # a receiver's answer is read up to this (only its status matters)

# The heads of due queues (locked), and every undelivered row of those queues, in id order. Rows without a
# task are each their own queue.
_PASS = """
WITH heads AS (
    SELECT o.id, o.task_id, o.target, o.url FROM outbox o
    WHERE o.next_attempt_at <= :now {only}
      AND NOT EXISTS (SELECT 1 FROM outbox e
                      WHERE e.task_id = o.task_id AND e.target = o.target AND e.url = o.url AND e.id < o.id)
    ORDER BY o.id
    LIMIT :batch
    {lock}
)
SELECT f.id, f.task_id, f.target, f.url, f.body, f.event_id, f.attempts, h.id AS head,
       t.execution_metadata->>'requestId' AS request_id, t.execution_metadata->>'traceparent' AS traceparent,
       f.created_at
FROM heads h JOIN outbox f
  ON f.id = h.id OR (h.task_id IS NOT NULL AND f.task_id = h.task_id AND f.target = h.target
                     AND f.url = h.url AND f.id > h.id)
LEFT JOIN task_instances t ON t.id = f.task_id
ORDER BY f.id
"""
_DELIVERED = "DELETE FROM outbox WHERE id {ids}"
_ABANDONED = text("DELETE FROM outbox WHERE id = :id")
_FAILED = text("UPDATE outbox SET attempts = attempts + 1, last_error = :error, next_attempt_at = :retry_at "
               "WHERE id = :id").bindparams(bindparam("retry_at", type_=DateTime(timezone=True)))


@functools.lru_cache(maxsize=6)
def _statements(dialect: str, callbacks: bool | None = None) -> tuple[TextClause, TextClause]:
    """The pass's SELECT (of every queue, only the callbacks' or all but theirs) and the DELETE of the rows
    delivered, for this dialect; built once."""
    now = bindparam("now", type_=DateTime(timezone=True))
    only = "" if callbacks is None else f"AND o.target {'=' if callbacks else '<>'} '{OutboxTarget.CALLBACK.value}'"
    if dialect == "postgresql":
        select = text(_PASS.format(lock="FOR UPDATE OF o SKIP LOCKED", only=only)).bindparams(now)
        done = text(_DELIVERED.format(ids="= ANY(:ids)")).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))
    else:
        select = text(_PASS.format(lock="", only=only)).bindparams(now)
        done = text(_DELIVERED.format(ids="IN :ids")).bindparams(bindparam("ids", expanding=True))
    return select, done


@dataclass
class Row:
    id: int
    task_id: str | None
    target: str
    url: str
    body: str
    event_id: str
    attempts: int
    head: int
    request_id: str | None = None  # the ids of the request that submitted the task (its executionMetadata)
    traceparent: str | None = None
    created_at: datetime | None = None


class Deliverer:
    """Sends outbox rows: kept-alive connections (requests for URLs the environment proxies), and a few
    queues at once. One per router process, shared by its dispatcher and the `outbox` sweep."""

    def __init__(self, settings: Settings, threads: int = DELIVERY_THREADS) -> None:
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        self.secret = secret
        self.max_backoff_s = settings.outbox_max_backoff_s
        self.callback_allowed = settings.callback_allowed
        self.keepalive = KeepAlive(*DELIVERY_TIMEOUT, max_body=MAX_ANSWER)
        self.http = requests.Session()  # honours HTTP(S)_PROXY: for the URLs KeepAlive leaves to it
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    def post(self, row: Row) -> str | None:
        """Deliver one row; None when the receiver took it (2xx), else why not."""
        body = row.body.encode()
        headers = {"Content-Type": "application/json", "X-TEL-Event-Id": row.event_id}
        if self.secret:
            headers["X-TEL-Signature"] = sign(body, self.secret)
        if row.request_id or row.traceparent:  # the submitter's request id, its trace with a new span
            headers.update(tracing.for_task(row.request_id, row.traceparent).headers())
        try:
            if row.target == OutboxTarget.CALLBACK.value:  # a user's URL: public addresses only (callbacks.py)
                status = callbacks.post(row.url, body, headers, self.callback_allowed, DELIVERY_TIMEOUT)
            elif self.keepalive.usable(row.url):
                status = self.keepalive.request("POST", row.url, body, headers).status
            else:
                status = self.http.post(row.url, data=body, headers=headers, timeout=DELIVERY_TIMEOUT).status_code
        except (TimeoutError, requests.Timeout):
            return "Timeout"
        except DestinationNotAllowed as exc:  # nothing was sent; retried with backoff (the name may change)
            log.info("callback refused by the egress rule", extra={"taskId": row.task_id, "error": str(exc)})
            return "DestinationNotAllowed"
        except (OSError, ValueError, requests.RequestException, Exception) as exc:  # noqa: BLE001
            log.debug("event delivery error", extra={"error": repr(exc)[:200]})
            return "ConnectionError"
        return None if 200 <= status < 300 else f"HTTP {status}"

    def send_queue(self, rows: list[Row]) -> tuple[list[Row], tuple[Row, str] | None]:
        """Send one queue's rows in order until one fails: (delivered rows, the failed row and why)."""
        sent: list[Row] = []
        for row in rows:
            error = self.post(row)
            record_outbox_delivery(row.target, error is None)
            if error is not None:
                return sent, (row, error)
            sent.append(row)
        return sent, None

    def send_all(self, queues: list[list[Row]]) -> Iterable[tuple[list[Row], tuple[Row, str] | None]]:
        if len(queues) <= 1 or self.threads <= 1:
            return [self.send_queue(q) for q in queues]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="outbox")
        return self._pool.map(self.send_queue, queues)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self.keepalive.close()
        self.http.close()


def backoff(attempts: int, cap: float) -> float:
    return min(cap, 0.5 * 2 ** min(attempts, 20)) * random.uniform(0.8, 1.2)


def _expired(row: Row, settings: Settings) -> bool:
    """A callback event older than TEL_CALLBACK_MAX_AGE: given up on its next failure. Only a task's
    `callbackUrl` (a user's receiver); the orchestrator's events and notifications are never given up."""
    return (row.target == OutboxTarget.CALLBACK.value and row.created_at is not None
            and utcnow() - row.created_at > timedelta(seconds=settings.callback_max_age_s))


def deliver_due(db: Database, settings: Settings, deliverer: Deliverer, batch: int = 100,
                callbacks: bool | None = None) -> int:
    """One pass; returns how many messages were delivered. `callbacks`: only the queues of tasks' callback
    URLs (True), every queue but theirs (False), or all (None)."""
    select, done = _statements(db.engine.dialect.name, callbacks)
    with db.engine.connect() as conn, conn.begin():
        rows = [Row(*r) for r in conn.execute(select, {"now": utcnow(), "batch": batch})]
        if not rows:
            return 0
        queues: dict[int, list[Row]] = {}
        for row in rows:
            queues.setdefault(row.head, []).append(row)
        delivered: list[int] = []
        for sent, failed in deliverer.send_all(list(queues.values())):
            delivered += [row.id for row in sent]
            if failed is not None:
                row, error = failed
                if _expired(row, settings):  # a user's receiver that kept failing: its event is given up
                    conn.execute(_ABANDONED, {"id": row.id})
                    record_outbox_abandoned(row.target)
                    log.warning("callback given up", extra={"taskId": row.task_id, "error": error,
                                                            "attempts": row.attempts + 1, "eventId": row.event_id})
                    continue
                retry_at = utcnow() + timedelta(seconds=backoff(row.attempts + 1, settings.outbox_max_backoff_s))
                conn.execute(_FAILED, {"id": row.id, "error": error, "retry_at": retry_at})
                log.info("event delivery failed", extra={"target": row.target, "error": error, "taskId": row.task_id})
        if delivered:
            conn.execute(done, {"ids": delivered})
    return len(delivered)
