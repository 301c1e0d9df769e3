"""Notifications to people about manual tasks, written to the outbox and delivered by the router's dispatcher.

Each notification is one `OutboxMessage` with target `notification`, POSTed to
`${NOTIFICATION_SERVICE_URL}/api/v1/notifications` with the body
`{type, recipients, taskId, taskName, priority, dueDate}`. Because it rides the outbox it is written in
the same transaction as the change it reports, retried with backoff while the service is down, and never
blocks an API request. Recipients are user names; a role is sent as `role:<name>`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC
from enum import StrEnum

from sqlalchemy.orm import Session

from taskexec.core.config import Settings
from taskexec.core.constants import OutboxTarget
from taskexec.store.models import OutboxMessage, TaskInstance, new_id, utcnow

log = logging.getLogger(__name__)

NOTIFICATION_PATH = "/api/v1/notifications"
NOTIFICATION_TARGET = OutboxTarget.NOTIFICATION.value
ROLE_PREFIX = "role:"


class NotificationType(StrEnum):
    ASSIGNMENT = "ASSIGNMENT"
    REMINDER = "REMINDER"
    ESCALATION = "ESCALATION"
    REASSIGNMENT = "REASSIGNMENT"
    COMPLETION = "COMPLETION"


def notification_url(settings: Settings) -> str | None:
    if not settings.notification_service_url:
        return None
    return settings.notification_service_url.rstrip("/") + NOTIFICATION_PATH


def current_recipients(task: TaskInstance) -> list[str]:
    """Whoever holds the task now: its assignee, else its candidate users and roles."""
    if task.assignee:
        return [task.assignee]
    return unique([*(task.candidate_users or []), *(ROLE_PREFIX + r for r in task.candidate_roles or [])])


def unique(items: Iterable[str | None]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item and item not in seen:
            seen.append(item)
    return seen


def notify(
    session: Session,
    settings: Settings,
    task: TaskInstance,
    kind: NotificationType,
    recipients: Iterable[str | None],
    task_name: str,
) -> str | None:
    """Queue one notification in the caller's transaction; returns its id (None when nothing is sent)."""
    url = notification_url(settings)
    people = unique(recipients)
    if url is None or not people:
        log.debug("notification skipped", extra={"taskId": task.id, "type": kind.value})
        return None
    body = {
        "type": kind.value,
        "recipients": people,
        "taskId": task.id,
        "taskName": task_name,
        "priority": task.priority,
        "dueDate": task.due_date.astimezone(UTC).isoformat().replace("+00:00", "Z") if task.due_date else None,
    }
    event_id = new_id()
    session.add(
        OutboxMessage(
            event_id=event_id,
            task_id=task.id,
            target=NOTIFICATION_TARGET,
            url=url,
            body=json.dumps(body, separators=(",", ":")),
            next_attempt_at=utcnow(),
        )
    )
    return event_id
