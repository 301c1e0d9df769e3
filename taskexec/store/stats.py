"""Read-only queries behind the dashboard and the scrape-time metrics.

Everything is computed from the task table and the outbox, so it survives restarts (unlike Flower's
in-memory view). Time windows are counted on `created_at` (what was submitted in the window) except
failures, which are listed by when they failed (`updated_at`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, case, cast, func, select
from sqlalchemy.orm import Session

from taskexec.core.constants import OPEN_STATUSES, Status, TaskType
from taskexec.store.models import OutboxMessage, TaskDefinition, TaskInstance, as_utc, parse_time

WINDOWS: dict[str, int] = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
BUCKET_STEPS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 10800)
MAX_POINTS = 60
FAILED_STATUSES = (Status.FAILED.value, Status.TIMED_OUT.value)
T = TaskInstance


@dataclass(frozen=True)
class Window:
    """A time window ending now, cut into `points` buckets of `bucket` seconds."""

    name: str
    seconds: int
    bucket: int
    now: datetime

    @property
    def since(self) -> datetime:
        return self.now - timedelta(seconds=self.seconds)

    @property
    def first_bucket(self) -> int:
        return int(self.since.timestamp()) // self.bucket

    @property
    def points(self) -> int:
        return int(self.now.timestamp()) // self.bucket - self.first_bucket + 1


def window(name: str, now: datetime | None = None) -> Window:
    """`name` is one of WINDOWS (e.g. "1h"); the bucket is the smallest step giving at most MAX_POINTS."""
    seconds = WINDOWS[name]
    bucket = next((b for b in BUCKET_STEPS if seconds / b <= MAX_POINTS), BUCKET_STEPS[-1])
    return Window(name, seconds, bucket, now or datetime.now(UTC))


def _where(stmt: Any, definition: str | None) -> Any:
    return stmt.where(T.definition_id == definition) if definition else stmt


def _bucket(column: Any, step: int) -> Any:
    return cast(func.floor(func.extract("epoch", column) / step), Integer)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return as_utc(value).isoformat()


def _age(value: datetime | str | None, now: datetime) -> float | None:
    value = parse_time(value) if isinstance(value, str) else value
    if value is None:
        return None
    return round((now - as_utc(value)).total_seconds(), 1)


# ------------------------------------------------------------------ counts

def status_counts(s: Session, w: Window, definition: str | None = None) -> dict[str, dict[str, int]]:
    """Tasks submitted in the window: {type: {status: count}}."""
    stmt = _where(select(T.type, T.status, func.count()).where(T.created_at >= w.since), definition)
    out: dict[str, dict[str, int]] = {}
    for kind, status, n in s.execute(stmt.group_by(T.type, T.status)):
        out.setdefault(kind, {})[status] = n
    return out


def open_counts(s: Session, definition: str | None = None) -> dict[str, dict[str, int]]:
    """Open tasks now, whenever submitted: {type: {PENDING|ASSIGNED|RUNNING: count}}."""
    stmt = select(T.type, T.status, func.count()).where(T.status.in_([x.value for x in OPEN_STATUSES]))
    out: dict[str, dict[str, int]] = {t.value: {} for t in TaskType}
    for kind, status, n in s.execute(_where(stmt, definition).group_by(T.type, T.status)):
        out.setdefault(kind, {})[status] = n
    return out


def timeline(s: Session, w: Window, definition: str | None = None) -> dict[str, Any]:
    """Tasks submitted per bucket, split by (current) status and by type."""
    bucket = _bucket(T.created_at, w.bucket).label("b")
    stmt = _where(select(bucket, T.type, T.status, func.count()).where(T.created_at >= w.since), definition)
    by_status: dict[str, list[int]] = {}
    by_type: dict[str, list[int]] = {t.value: [0] * w.points for t in TaskType}
    for b, kind, status, n in s.execute(stmt.group_by(bucket, T.type, T.status)):
        i = int(b) - w.first_bucket
        if 0 <= i < w.points:
            by_status.setdefault(status, [0] * w.points)[i] += n
            by_type.setdefault(kind, [0] * w.points)[i] += n
    return {"bucketSeconds": w.bucket, "start": w.first_bucket * w.bucket, "points": w.points,
            "byStatus": by_status, "byType": by_type}


def error_codes(s: Session, w: Window, definition: str | None = None) -> list[dict[str, Any]]:
    """Failures in the window by error code, most frequent first."""
    code = T.error["code"].as_string().label("code")
    stmt = select(code, func.count().label("n")).where(T.status.in_(FAILED_STATUSES), T.updated_at >= w.since)
    rows = s.execute(_where(stmt, definition).group_by(code).order_by(func.count().desc()))
    return [{"code": c or "UNKNOWN", "count": n} for c, n in rows]


# ------------------------------------------------------------------ lists

def recent_failures(s: Session, w: Window, definition: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    stmt = select(T).where(T.status.in_(FAILED_STATUSES), T.updated_at >= w.since)
    rows = s.scalars(_where(stmt, definition).order_by(T.updated_at.desc()).limit(limit))
    return [{"id": t.id, "taskDefinitionId": t.definition_id, "type": t.type, "status": t.status,
             "errorCode": (t.error or {}).get("code"), "errorMessage": str((t.error or {}).get("message") or "")[:300],
             "retryCount": t.retry_count, "failedAt": _iso(t.updated_at)} for t in rows]


def running(s: Session, definition: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """RUNNING tasks, oldest first, with their age in seconds."""
    now = datetime.now(UTC)
    stmt = select(T).where(T.status == Status.RUNNING.value)
    rows = s.scalars(_where(stmt, definition).order_by(T.updated_at).limit(limit))
    out = []
    for t in rows:
        started = (t.execution_metadata or {}).get("startTime") or t.updated_at
        out.append({"id": t.id, "taskDefinitionId": t.definition_id, "type": t.type, "priority": t.priority,
                    "workerId": t.worker_id, "attempt": t.attempt, "startTime": started if isinstance(started, str)
                    else _iso(started), "ageSeconds": _age(started, now)})
    return out


def manual_due(s: Session, definition: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Open manual tasks with a deadline, the nearest (or most overdue) first."""
    now = datetime.now(UTC)
    stmt = select(T).where(T.type == TaskType.MANUAL.value, T.status == Status.ASSIGNED.value,
                           T.due_date.is_not(None))
    rows = s.scalars(_where(stmt, definition).order_by(T.due_date).limit(limit))
    return [{"id": t.id, "taskDefinitionId": t.definition_id, "priority": t.priority, "assignee": t.assignee,
             "candidateRoles": t.candidate_roles or [], "dueDate": _iso(t.due_date),
             "secondsLeft": -(_age(t.due_date, now) or 0.0)} for t in rows]


DEADLINE_STATES = ("overdue", "due_1h", "due_24h", "later", "none")


def manual_deadline_counts(s: Session, now: datetime | None = None) -> dict[str, int]:
    """Open manual tasks (PENDING or ASSIGNED) by how close their deadline is: overdue, due within the hour,
    within a day, later, or none. Fixed buckets (no setting): the scrape-time gauge behind the manual
    deadlines panel and alert."""
    now = now or datetime.now(UTC)
    due = T.due_date
    state = case((due.is_(None), "none"), (due < now, "overdue"), (due < now + timedelta(hours=1), "due_1h"),
                 (due < now + timedelta(days=1), "due_24h"), else_="later").label("state")
    stmt = (select(state, func.count())
            .where(T.type == TaskType.MANUAL.value, T.status.in_([Status.PENDING.value, Status.ASSIGNED.value]))
            .group_by(state))
    out = dict.fromkeys(DEADLINE_STATES, 0)
    for name, n in s.execute(stmt):
        out[name] = n
    return out


def workers_running(s: Session) -> list[dict[str, Any]]:
    """Per worker process (`host:pid`), the tasks it runs now: the load the database can see."""
    stmt = (select(T.worker_id, T.type, func.count(), func.min(T.updated_at))
            .where(T.status == Status.RUNNING.value, T.worker_id.is_not(None))
            .group_by(T.worker_id, T.type).order_by(func.count().desc()))
    return [{"workerId": w, "type": kind, "running": n, "oldestSince": _iso(oldest)}
            for w, kind, n, oldest in s.execute(stmt)]


def outbox_backlog(s: Session) -> list[dict[str, Any]]:
    """Undelivered outbound events per target, with the oldest one's age."""
    now = datetime.now(UTC)
    stmt = (select(OutboxMessage.target, func.count(), func.min(OutboxMessage.created_at),
                   func.count().filter(OutboxMessage.attempts > 0))
            .group_by(OutboxMessage.target))
    return [{"target": target, "count": n, "oldestAgeSeconds": _age(oldest, now), "failing": failing}
            for target, n, oldest, failing in s.execute(stmt)]


def definitions(s: Session) -> list[dict[str, str]]:
    """Definition ids with their latest name and type (for the filter)."""
    latest = select(TaskDefinition.id, func.max(TaskDefinition.version_key).label("k")).group_by(TaskDefinition.id)
    sub = latest.subquery()
    stmt = (select(TaskDefinition.id, TaskDefinition.name, TaskDefinition.type)
            .join(sub, (TaskDefinition.id == sub.c.id) & (TaskDefinition.version_key == sub.c.k))
            .order_by(TaskDefinition.id))
    return [{"id": i, "name": n, "type": t} for i, n, t in s.execute(stmt)]


def overview(s: Session, window_name: str, definition: str | None = None) -> dict[str, Any]:
    """Everything the dashboard's main view shows that comes from the database."""
    w = window(window_name)
    counts = status_counts(s, w, definition)
    by_status: dict[str, int] = {}
    for per_type in counts.values():
        for status, n in per_type.items():
            by_status[status] = by_status.get(status, 0) + n
    finished = sum(by_status.get(x.value, 0) for x in (Status.COMPLETED, Status.FAILED, Status.CANCELLED,
                                                        Status.TIMED_OUT))
    failed = sum(by_status.get(x, 0) for x in FAILED_STATUSES)
    return {
        "generatedAt": w.now.isoformat(), "window": w.name, "definition": definition,
        "totals": {"submitted": sum(by_status.values()), "byStatus": by_status, "byType": counts,
                   "failureRatio": round(failed / finished, 4) if finished else None},
        "open": open_counts(s, definition),
        "timeline": timeline(s, w, definition),
        "errorCodes": error_codes(s, w, definition),
        "failures": recent_failures(s, w, definition),
        "running": running(s, definition),
        "manualDue": manual_due(s, definition),
        "workers": workers_running(s),
        "outbox": outbox_backlog(s),
        "definitions": definitions(s),
    }
