"""Prometheus metrics: every metric name lives here, with the small helpers that record them.

Where each family is recorded:

* router, on committed state changes (`taskexec.services.task_metrics`): tasks submitted, finished, retried,
  `task_queue_time_seconds`, `task_execution_time_seconds`; and outbox deliveries (`taskexec.services.outbox`).
  The router runs several gunicorn processes, so these use Prometheus' multiprocess mode
  (`taskexec.observability.metrics_export`).
* router, computed at scrape time (`taskexec.services.metrics_collector`): queue lengths, workers per queue,
  open tasks, outbox backlog, manual tasks by deadline. The names are listed below as constants.
* worker processes, from Celery signals (`workers.metrics_hooks`): worker online, executing tasks,
  task runtime, attempt outcomes (sandbox outcomes by error code); integration requests and circuit
  state through `record_integration_request` / `set_circuit_state`.

celery-exporter's names and labels are used where the thing measured is the same; Flower's never (see below).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

# ------------------------------------------------------------------ buckets

QUEUE_TIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
EXECUTION_TIME_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 14400, 86400)
REQUEST_TIME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# ------------------------------------------------------------------ router: state changes (multiprocess)

TASKS_SUBMITTED = Counter(
    "taskexec_tasks_submitted_total", "Tasks accepted by the router.", ["type", "definition"])
TASKS_FINISHED = Counter(
    "taskexec_tasks_finished_total",
    "Tasks that reached a final status (COMPLETED, FAILED, CANCELLED, TIMED_OUT).",
    ["type", "definition", "status"])
TASK_QUEUE_TIMEOUTS = Counter(
    "taskexec_tasks_queue_timeouts_total",
    "Tasks that waited in their queue past their queued timeout (TIMED_OUT, QUEUE_TIMEOUT) by type and queue.",
    ["type", "queue"])
TASK_RETRIES = Counter(
    "taskexec_task_retries_total", "Tasks put back in the queue for another attempt.", ["type", "definition"])
TASK_QUEUE_TIME = Histogram(
    "task_queue_time_seconds",
    "Seconds from ready (submitted, or a retry due) to leaving the queue (RUNNING, or ASSIGNED for manual tasks).",
    ["type"], buckets=QUEUE_TIME_BUCKETS)
TASK_EXECUTION_TIME = Histogram(
    "task_execution_time_seconds",
    "Seconds an attempt ran (RUNNING to its result); manual tasks: claim to completion.",
    ["type", "definition"], buckets=EXECUTION_TIME_BUCKETS)
OUTBOX_DELIVERIES = Counter(
    "taskexec_outbox_deliveries_total",
    "Outbound event deliveries by target and result (ok, failed, abandoned: a callback given up).",
    ["target", "result"])

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
HTTP_REQUESTS = Counter(
    "taskexec_http_requests_total", "HTTP requests the router answered, by route template and status.",
    ["method", "route", "status"])
HTTP_REQUEST_TIME = Histogram(
    "taskexec_http_request_duration_seconds", "Time the router took to answer, by route template.",
    ["method", "route"], buckets=HTTP_BUCKETS)
API_RATE_LIMITED = Counter(
    "taskexec_api_rate_limited_total", "API requests refused with 429 (per-principal rate limit), by class.",
    ["rate_class"])
API_SHED = Counter(
    "taskexec_api_shed_total", "Submissions refused with 503 because their queue is over a shedding threshold.",
    ["queue", "priority"])

# ------------------------------------------------------------------ router: computed at scrape time

CELERY_QUEUE_LENGTH = "celery_queue_length"  # {queue_name} messages waiting on the broker (celery-exporter)
CELERY_ACTIVE_WORKER_COUNT = "celery_active_worker_count"  # {queue_name} workers consuming the queue
CELERY_ACTIVE_PROCESS_COUNT = "celery_active_process_count"  # {queue_name} their summed concurrency
QUEUE_LENGTH_BY_PRIORITY = "taskexec_queue_length"  # {queue_name, priority} messages waiting per priority
TASKS_OPEN = "taskexec_tasks_open"  # {type, status} PENDING / ASSIGNED / RUNNING tasks in the database
OUTBOX_BACKLOG = "taskexec_outbox_backlog"  # {target} events not delivered yet
OUTBOX_OLDEST_AGE = "taskexec_outbox_oldest_age_seconds"  # {target} age of the oldest undelivered event
MANUAL_TASKS_BY_DEADLINE = "taskexec_manual_tasks_by_deadline"  # {state} open manual tasks: overdue, due_1h, ...

# ------------------------------------------------------------------ workers (one process per worker)
# Where a pool measures what celery-exporter measures, it uses celery-exporter's name and labels (its
# community dashboards and alerts then work on our pools); `hostname` is the host part of the node name,
# as celery-exporter reports it. Flower's `flower_*` names are never used: `celery -A workers.app flower`
# loads this module into Flower's own registry, where a second `flower_task_runtime_seconds` is an error.

WORKER_UP = Gauge(
    "celery_worker_up", "Indicates if a worker is up (1 from worker_ready until shutdown).", ["hostname"],
    multiprocess_mode="livemax")
WORKER_TASKS_ACTIVE = Gauge(
    "celery_worker_tasks_active", "The number of tasks the worker is currently processing.", ["hostname"],
    multiprocess_mode="livesum")
TASK_RECEIVED = Counter(
    "celery_task_received", "Task messages the worker received.", ["name", "hostname", "queue_name"])
TASK_STARTED = Counter(
    "celery_task_started", "Tasks the worker started to execute.", ["name", "hostname", "queue_name"])
TASK_SUCCEEDED = Counter(
    "celery_task_succeeded", "Tasks that returned (for an execute task: its outcome was reported).",
    ["name", "hostname", "queue_name"])
TASK_FAILED = Counter(
    "celery_task_failed", "Tasks that raised.", ["name", "hostname", "exception", "queue_name"])
TASK_REJECTED = Counter(
    "celery_task_rejected", "Task messages rejected (handed back to the broker, e.g. during a warm shutdown).",
    ["name", "hostname", "queue_name"])
TASK_REVOKED = Counter(
    "celery_task_revoked", "Task messages revoked before they ran.", ["name", "hostname", "queue_name"])
TASK_RUNTIME = Histogram(
    "celery_task_runtime", "Histogram of task runtime measurements (seconds, as seen by the worker).",
    ["name", "hostname", "queue_name"], buckets=EXECUTION_TIME_BUCKETS)
WORKER_CONCURRENCY = Gauge(
    "taskexec_worker_concurrency", "Task slots of a worker process (its pool size; follows pool_grow/shrink).",
    ["hostname", "pool"], multiprocess_mode="livesum")
WORKER_CONSUMER_STALLED = Gauge(
    "taskexec_worker_consumer_stalled",
    "1 while the worker's consumer takes no message although its queue has work and it has free slots.",
    ["hostname", "pool"], multiprocess_mode="livemax")
ATTEMPTS = Counter(
    "taskexec_attempts_total",
    "Attempts run by a pool, by outcome: COMPLETED or the error code (sandbox outcomes: pool=automated).",
    ["pool", "outcome"])
INTEGRATION_REQUESTS = Counter(
    "taskexec_integration_requests_total",
    "Outbound integration requests by target (host or integrationId) and outcome (success or error code).",
    ["target", "outcome"])
INTEGRATION_REQUEST_TIME = Histogram(
    "taskexec_integration_request_duration_seconds", "Duration of outbound integration requests.", ["target"],
    buckets=REQUEST_TIME_BUCKETS)
INTEGRATION_CIRCUIT_STATE = Gauge(
    "taskexec_integration_circuit_state", "Circuit breaker state per target: 0 closed, 1 half-open, 2 open.",
    ["target"], multiprocess_mode="livemax")

SUCCESS = "success"
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}


# ------------------------------------------------------------------ recording helpers

_children: dict[tuple[MetricWrapperBase, tuple[tuple[str, str], ...]], Any] = {}


def child(metric: MetricWrapperBase, **labels: str) -> Any:
    """`metric.labels(**labels)`, remembered. `labels()` checks its arguments and takes the metric's lock on
    every call; a pool's 64 threads record about ten series a task and contended for those locks (py-spy).
    The children are never removed, so a remembered one stays the metric's own."""
    key = (metric, tuple(labels.items()))
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(**labels)
    return found


def record_integration_request(target: str, outcome: str, duration_s: float | None = None) -> None:
    """One outbound integration request: `outcome` is "success" or a task error code (e.g. TIMEOUT_ERROR)."""
    child(INTEGRATION_REQUESTS, target=target or "unknown", outcome=outcome or "unknown").inc()
    if duration_s is not None:
        child(INTEGRATION_REQUEST_TIME, target=target or "unknown").observe(max(0.0, duration_s))


def set_circuit_state(target: str, state: str) -> None:
    """The circuit breaker of `target` moved to `state`: "closed", "half_open" or "open"."""
    child(INTEGRATION_CIRCUIT_STATE, target=target or "unknown").set(CIRCUIT_STATES[state.lower()])


def record_attempt(pool: str, outcome: str) -> None:
    """An attempt finished in a worker: `outcome` is COMPLETED, CANCELLED or the error code."""
    child(ATTEMPTS, pool=pool, outcome=outcome).inc()


def declare_queue_timeouts(queues: dict[str, str]) -> None:
    """Create every (type, queue) series of the queue-timeout counter at 0 when the router starts, so the
    alert on it and the dashboard see a series before the first timeout (`queues`: type -> queue name)."""
    for kind, queue in queues.items():
        child(TASK_QUEUE_TIMEOUTS, type=str(kind), queue=queue)


def record_outbox_delivery(target: str, ok: bool) -> None:
    child(OUTBOX_DELIVERIES, target=target, result="ok" if ok else "failed").inc()


def record_outbox_abandoned(target: str) -> None:
    child(OUTBOX_DELIVERIES, target=target, result="abandoned").inc()
