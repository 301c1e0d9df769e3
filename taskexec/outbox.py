"""Outbox delivery: POST each stored event at least once, in order per task and target, with backoff."""

from __future__ import annotations

import functools
import logging
import random
from datetime import timedelta

import requests
from sqlalchemy import and_, bindparam, exists, select
from sqlalchemy.orm import aliased

from taskexec.config import Settings
from taskexec.db import Database
from taskexec.events import sign
from taskexec.metrics import record_outbox_delivery
from taskexec.models import OutboxMessage, utcnow

log = logging.getLogger(__name__)
DELIVERY_TIMEOUT = (3.05, 10)


@functools.lru_cache(maxsize=8)
def _heads(limit: int):
    """Undelivered rows with no earlier undelivered row for the same task and target, due at `:now`.

    Built once per limit: the router runs this on every dispatcher pass, and building it is costlier
    than running it."""
    earlier = aliased(OutboxMessage)
    blocked = exists().where(
        and_(
            earlier.task_id == OutboxMessage.task_id,
            earlier.target == OutboxMessage.target,
            earlier.url == OutboxMessage.url,
            earlier.delivered_at.is_(None),
            earlier.id < OutboxMessage.id,
        )
    )
    return (
        select(OutboxMessage)
        .where(OutboxMessage.delivered_at.is_(None), OutboxMessage.next_attempt_at <= bindparam("now"), ~blocked)
        .order_by(OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=OutboxMessage)
    )


def backoff(attempts: int, cap: float) -> float:
    return min(cap, 0.5 * 2 ** min(attempts, 20)) * random.uniform(0.8, 1.2)


def deliver_due(db: Database, settings: Settings, http: requests.Session, batch: int = 50) -> int:
    """One pass; returns how many messages were delivered."""
    delivered = 0
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    with db.session() as s:
        rows = list(s.scalars(_heads(batch), {"now": utcnow()}))
        for row in rows:
            body = row.body.encode()
            headers = {"Content-Type": "application/json", "X-TEL-Event-Id": row.event_id}
            if secret:
                headers["X-TEL-Signature"] = sign(body, secret)
            row.attempts += 1
            try:
                resp = http.post(row.url, data=body, headers=headers, timeout=DELIVERY_TIMEOUT)
                ok = 200 <= resp.status_code < 300
                error = None if ok else f"HTTP {resp.status_code}"
            except requests.RequestException as exc:
                ok, error = False, type(exc).__name__
            record_outbox_delivery(row.target, ok)
            if ok:
                row.delivered_at = utcnow()
                row.last_error = None
                delivered += 1
            else:
                row.last_error = error
                row.next_attempt_at = utcnow() + timedelta(seconds=backoff(row.attempts, settings.outbox_max_backoff_s))
                log.info("event delivery failed", extra={"target": row.target, "error": error, "taskId": row.task_id})
    return delivered
