"""Outbound orchestrator events: the envelope, its signature, and the outbox rows that carry it."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from sqlalchemy.orm import Session

from taskexec.config import Settings
from taskexec.constants import EVENT_SOURCE
from taskexec.models import OutboxMessage, TaskInstance, new_id, utcnow

ORCHESTRATOR_PATH = "/api/v1/task-events"


def envelope(task: TaskInstance, event_type: str, event_id: str | None = None) -> dict[str, Any]:
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
        "timestamp": utcnow().isoformat(),
        "data": data,
        "metadata": {"correlationId": task.correlation_id, "source": EVENT_SOURCE},
    }


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def enqueue_event(
    session: Session, settings: Settings, task: TaskInstance, event_type: str, extra: dict[str, Any] | None = None
) -> str:
    """Write the event for the orchestrator (and the task's callback) into the outbox."""
    env = envelope(task, event_type)
    if extra:
        env["data"].update(extra)
    body = json.dumps(env, separators=(",", ":"), default=str)
    targets = []
    if settings.workflow_orchestrator_url:
        targets.append(("orchestrator", settings.workflow_orchestrator_url.rstrip("/") + ORCHESTRATOR_PATH))
    if task.callback_url:
        targets.append(("callback", task.callback_url))
    for target, url in targets:
        session.add(
            OutboxMessage(event_id=env["id"], task_id=task.id, target=target, url=url, body=body,
                          next_attempt_at=utcnow())
        )
    return str(env["id"])
