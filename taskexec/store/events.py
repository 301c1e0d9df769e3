"""Outbound orchestrator events: the envelope, its signature, and the outbox rows that carry it."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from taskexec.core.config import Settings
from taskexec.core.constants import EVENT_SOURCE, OutboxTarget
from taskexec.store.models import OutboxMessage, new_id, utcnow

ORCHESTRATOR_PATH = "/api/v1/task-events"


class TaskLike(Protocol):
    """What an event reads of its task: a `TaskInstance`, or a row of the hot paths' RETURNING."""

    id: str
    status: str
    output: Any
    error: Any
    workflow_instance_id: str | None
    correlation_id: str | None
    definition_id: str
    type: str
    retry_count: int
    callback_url: str | None


def envelope(task: TaskLike, event_type: str, event_id: str | None = None,
             at: datetime | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"taskId": task.id, "status": task.status}
    if task.output is not None:
        data["output"] = task.output
    if task.error is not None:
        data["error"] = task.error
    if task.workflow_instance_id:
        data["workflowInstanceId"] = task.workflow_instance_id
    if task.correlation_id:
        data["correlationId"] = task.correlation_id
    data["taskDefinitionId"] = task.definition_id
    data["type"] = task.type
    data["retryCount"] = task.retry_count
    return {
        "type": event_type,
        "id": event_id or new_id(),
        "timestamp": (at or utcnow()).isoformat(),
        "data": data,
        "metadata": {"correlationId": task.correlation_id, "source": EVENT_SOURCE},
    }


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def outbox_rows(settings: Settings, task: TaskLike, event_type: str, extra: dict[str, Any] | None = None,
                at: datetime | None = None) -> list[dict[str, Any]]:
    """The outbox rows (column values) of one event: one per target (orchestrator, the task's callback)."""
    targets = []
    if settings.workflow_orchestrator_url:
        url = settings.workflow_orchestrator_url.rstrip("/") + ORCHESTRATOR_PATH
        targets.append((OutboxTarget.ORCHESTRATOR.value, url))
    if task.callback_url:
        targets.append((OutboxTarget.CALLBACK.value, task.callback_url))
    if not targets:
        return []
    now = at or utcnow()
    env = envelope(task, event_type, at=now)
    if extra:
        env["data"].update(extra)
    body = json.dumps(env, separators=(",", ":"), default=str)
    return [{"event_id": env["id"], "task_id": task.id, "target": target, "url": url, "body": body,
             "attempts": 0, "next_attempt_at": now, "created_at": now} for target, url in targets]


def enqueue_event(
    session: Session, settings: Settings, task: TaskLike, event_type: str, extra: dict[str, Any] | None = None
) -> str | None:
    """Write the event for the orchestrator (and the task's callback) into the outbox; its id."""
    rows = outbox_rows(settings, task, event_type, extra)
    for row in rows:
        session.add(OutboxMessage(**row))
    return str(rows[0]["event_id"]) if rows else None
