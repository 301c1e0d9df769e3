"""Every name the system shares: statuses, types, priorities, queues, error codes, permissions."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "PENDING"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT})
OPEN_STATUSES = frozenset({Status.PENDING, Status.ASSIGNED, Status.RUNNING})


class TaskType(StrEnum):
    AUTOMATED = "AUTOMATED"
    MANUAL = "MANUAL"
    INTEGRATION = "INTEGRATION"


class Priority(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        """0 (LOW) .. 3 (CRITICAL); higher is dequeued first."""
        return list(Priority).index(self)


class Runtime(StrEnum):
    PYTHON = "python"
    SHELL = "shell"


class ErrorCode(StrEnum):
    """API error envelope codes (docs/api.md, "The error envelope")."""

    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    RATE_LIMITED = "RATE_LIMITED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class TaskErrorCode(StrEnum):
    """Codes carried in a failed task's `error.code`."""

    TIME_LIMIT_EXCEEDED = "TIME_LIMIT_EXCEEDED"
    MEMORY_LIMIT_EXCEEDED = "MEMORY_LIMIT_EXCEEDED"
    OUTPUT_LIMIT_EXCEEDED = "OUTPUT_LIMIT_EXCEEDED"
    NON_ZERO_EXIT = "NON_ZERO_EXIT"
    OUTPUT_VALIDATION_ERROR = "OUTPUT_VALIDATION_ERROR"
    SANDBOX_ERROR = "SANDBOX_ERROR"
    CONNECTION_ERROR = "CONNECTION_ERROR"
    AUTHENTICATION_ERROR = "AUTHENTICATION_ERROR"
    TIMEOUT_ERROR = "TIMEOUT_ERROR"
    RATE_LIMIT_ERROR = "RATE_LIMIT_ERROR"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    INTEGRATION_ERROR = "INTEGRATION_ERROR"
    MAX_RETRIES_EXCEEDED = "MAX_RETRIES_EXCEEDED"
    CANCELLED = "CANCELLED"
    QUEUE_TIMEOUT = "QUEUE_TIMEOUT"
    WORKER_LOST = "WORKER_LOST"
    DESTINATION_NOT_ALLOWED = "DESTINATION_NOT_ALLOWED"  # an integration URL resolving to a refused address


class EventType(StrEnum):
    """Outbound orchestrator event types (docs/api.md; docs/architecture.md, the outbox)."""

    CREATED = "task.instance.created"
    STARTED = "task.instance.started"
    COMPLETED = "task.instance.completed"
    FAILED = "task.instance.failed"
    CANCELLED = "task.instance.cancelled"
    TIMED_OUT = "task.instance.timed_out"
    RETRY = "task.instance.retry"
    MANUAL_ASSIGNED = "task.manual.assigned"


STATUS_EVENT: dict[Status, EventType] = {
    Status.PENDING: EventType.CREATED,
    Status.ASSIGNED: EventType.MANUAL_ASSIGNED,
    Status.RUNNING: EventType.STARTED,
    Status.COMPLETED: EventType.COMPLETED,
    Status.FAILED: EventType.FAILED,
    Status.CANCELLED: EventType.CANCELLED,
    Status.TIMED_OUT: EventType.TIMED_OUT,
}

EVENT_SOURCE = "task-execution-layer"


class AuditEvent(StrEnum):
    """Audit-only events in a task's history (`GET /tasks/{id}/events`), never sent to the orchestrator.

    A status change is audited under its `EventType` unless it names one of these instead (a claim is
    audited as `task.claimed` but announced as `task.manual.assigned`).
    """

    VIEWED = "task.viewed"  # a person opened the task (manual inbox, task API)
    CLAIMED = "task.claimed"
    REASSIGNED = "task.reassigned"
    ESCALATED = "task.escalated"
    REMINDER_SENT = "task.reminder_sent"
    ASSIGNMENT_DEFERRED = "task.assignment_deferred"  # every load-balanced candidate is at the cap
    DEFERRED = "task.instance.deferred"  # put back to wait, e.g. for its target's rate limit
    CLAIM_REJECTED = "task.claim_rejected"
    COMPLETION_REJECTED = "task.completion_rejected"
    REASSIGNMENT_REJECTED = "task.reassignment_rejected"


# A refused human action (the API's action name) and the audit event that keeps it in the task's history.
REJECTION_EVENT: dict[str, AuditEvent] = {
    "claim": AuditEvent.CLAIM_REJECTED,
    "completion": AuditEvent.COMPLETION_REJECTED,
    "reassignment": AuditEvent.REASSIGNMENT_REJECTED,
}


class Permission(StrEnum):
    EXECUTE = "tasks:execute"
    READ = "tasks:read"
    LIST = "tasks:list"
    CANCEL = "tasks:cancel"
    CLAIM = "tasks:claim"
    COMPLETE = "tasks:complete"
    REASSIGN = "tasks:reassign"
    DEFINITIONS_LIST = "tasks:definitions:list"
    DEFINITIONS_READ = "tasks:definitions:read"
    DEFINITIONS_WRITE = "tasks:definitions:write"
    INTERNAL = "tasks:internal"
    ADMIN = "admin"
    MONITOR = "tasks:monitor"  # not in the contract's list: the dashboard and its stats (docs/monitoring.md)


_SUBMITTER = frozenset(
    {
        Permission.EXECUTE,
        Permission.READ,
        Permission.LIST,
        Permission.CANCEL,
        Permission.DEFINITIONS_LIST,
        Permission.DEFINITIONS_READ,
    }
)

ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "developer": _SUBMITTER | {Permission.DEFINITIONS_WRITE},
    "submitter": _SUBMITTER,
    "operator": frozenset({Permission.READ, Permission.LIST, Permission.CLAIM, Permission.COMPLETE}),
    "service": frozenset({Permission.INTERNAL, Permission.READ, Permission.DEFINITIONS_READ}),
    # read-only operations staff (not the contract's `operator`, who works manual tasks): sees every task
    "monitor": frozenset({Permission.MONITOR, Permission.READ, Permission.LIST, Permission.DEFINITIONS_LIST,
                          Permission.DEFINITIONS_READ}),
}

class Pool(StrEnum):
    """The worker pools, one per task type (`taskexec worker <pool>`, the Celery node name's prefix)."""

    AUTOMATED = "automated"
    MANUAL = "manual"
    INTEGRATION = "integration"

    @classmethod
    def of(cls, task_type: TaskType | str) -> Pool:
        """The pool that runs tasks of `task_type`."""
        return cls(TaskType(task_type).value.lower())


POOLS: tuple[str, ...] = tuple(p.value for p in Pool)
DEADLETTER = "deadletter"  # the dead-letter queue's key next to the pools' (queue listings, broker stats)


class OutboxTarget(StrEnum):
    """Who an outbox row is for (the `target` column; a label of the outbox metrics)."""

    ORCHESTRATOR = "orchestrator"
    CALLBACK = "callback"  # the task's own callbackUrl
    NOTIFICATION = "notification"  # the notification service (manual tasks)


# Default queue names (overridable through TEL_QUEUE_<TYPE>_NAME).
DEFAULT_QUEUES: dict[str, str] = {
    TaskType.AUTOMATED: "task-execution-automated",
    TaskType.MANUAL: "task-execution-manual",
    TaskType.INTEGRATION: "task-execution-integration",
    DEADLETTER.upper(): "task-execution-deadletter",
}

# Celery task names (one source of truth for producers and consumers).
CELERY_TASK_EXECUTE = {
    TaskType.AUTOMATED: "taskexec.execute.automated",
    TaskType.MANUAL: "taskexec.execute.manual",
    TaskType.INTEGRATION: "taskexec.execute.integration",
}
CELERY_TASK_SWEEP = "taskexec.sweep"

SERVICE_NAME = "taskexec"
API_PREFIX = "/api/v1"
INTERNAL_PREFIX = "/internal/v1"
