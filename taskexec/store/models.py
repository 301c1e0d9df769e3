"""SQLAlchemy 2 models: definitions, task instances, events (audit trail), API keys, outbox."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from taskexec.core.constants import Status

JSONType = JSONB()  # PostgreSQL is the one database (docs/architecture.md)
BigId = BigInteger()
_PENDING = text(f"status = '{Status.PENDING.value}'")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An aware datetime: a naive one is taken as UTC (every column is `timestamptz`; the JSON metadata a
    worker reports is not, and subtracting naive from aware raises TypeError, a 500)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_time(text: Any) -> datetime | None:
    """An ISO 8601 time from JSON metadata (`startTime`, ...), aware; None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        return None


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    pass


class TaskDefinition(Base):
    """One version of a definition; (id, version) is the key, the latest version wins by default.

    `version` is a semantic version ("1.2.0"); `version_key` its sort key (taskexec/core/semver.py), so the
    latest is the maximum in SQL too (1.10.0 after 1.9.0)."""

    __tablename__ = "task_definitions"
    __table_args__ = (Index("ix_task_definitions_version_key", "id", "version_key"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(50), primary_key=True)
    version_key: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16), index=True)
    input_schema: Mapped[dict[str, Any]] = mapped_column(JSONType)
    output_schema: Mapped[dict[str, Any]] = mapped_column(JSONType)
    timeout_ms: Mapped[int | None] = mapped_column(Integer)
    retry_policy: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    execution_config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_by: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TaskInstance(Base):
    """A submitted task. Every status change goes through `taskexec.store.statemachine`."""

    __tablename__ = "task_instances"
    __table_args__ = (
        ForeignKeyConstraint(
            ["definition_id", "definition_version"], ["task_definitions.id", "task_definitions.version"],
            name="fk_task_instances_definition",
        ),
        Index("ix_task_instances_status_type", "status", "type"),
        Index("ix_task_instances_created_at", "created_at"),
        # Partial indexes (migration 0008): a row is in them only while it can match their queries, so a
        # start or finish writes no entry into them (PENDING-only sweeps; lookups by a value that is set).
        Index("ix_task_instances_dispatch", "enqueued_at", "available_at", postgresql_where=_PENDING),
        Index("ix_task_instances_queue_deadline", "queue_deadline", postgresql_where=_PENDING),
        *[Index(f"ix_task_instances_{c}", c, postgresql_where=text(f"{c} IS NOT NULL"))
          for c in ("assignee", "due_date", "workflow_instance_id", "correlation_id")],
        Index("ix_task_instances_idempotency_key", "idempotency_key", unique=True,
              postgresql_where=text("idempotency_key IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    definition_id: Mapped[str] = mapped_column(String(128), index=True)
    definition_version: Mapped[str] = mapped_column(String(50))
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16), default="MEDIUM")
    input: Mapped[Any] = mapped_column(JSONType)
    output: Mapped[Any | None] = mapped_column(JSONType)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    assignee: Mapped[str | None] = mapped_column(String(256))
    candidate_roles: Mapped[list[str] | None] = mapped_column(JSONType)
    candidate_users: Mapped[list[str] | None] = mapped_column(JSONType)
    due_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_by: Mapped[str | None] = mapped_column(String(256))
    reminders_sent: Mapped[list[float] | None] = mapped_column(JSONType)
    escalated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    dispatch_token: Mapped[str | None] = mapped_column(String(36))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    available_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # PENDING only: past this, no worker took the task in time and the `queued` sweep ends it (QUEUE_TIMEOUT)
    queue_deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker_id: Mapped[str | None] = mapped_column(String(256))
    workflow_instance_id: Mapped[str | None] = mapped_column(String(256))
    correlation_id: Mapped[str | None] = mapped_column(String(256))
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    execution_config: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    execution_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    idempotency_key: Mapped[str | None] = mapped_column(String(512))
    created_by: Mapped[str | None] = mapped_column(String(256))
    stdout: Mapped[str | None] = mapped_column(Text)
    stderr: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class TaskEvent(Base):
    """The audit trail: state changes and human actions, who and when."""

    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("task_instances.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(256))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """A service account key; only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(256))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    roles: Mapped[list[str]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OutboxMessage(Base):
    """An outbound event written in the same transaction as the change it reports, and deleted once its
    receiver took it: every row is waiting to be delivered (the task's events stay in `task_events`)."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36))
    task_id: Mapped[str | None] = mapped_column(String(36), index=True)
    target: Mapped[str] = mapped_column(String(32))  # orchestrator | callback | notification
    url: Mapped[str] = mapped_column(String(2048))
    body: Mapped[str] = mapped_column(Text)  # exact bytes that are signed and sent
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeadLetter(Base):
    """A task that spent its retries; an operator can list and re-drive it."""

    __tablename__ = "dead_letters"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    task_id: Mapped[str] = mapped_column(ForeignKey("task_instances.id", ondelete="CASCADE"), index=True)
    queue: Mapped[str] = mapped_column(String(256))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    redriven_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    redriven_by: Mapped[str | None] = mapped_column(String(256))
