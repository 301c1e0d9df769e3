"""The three changes every task goes through (stored, started, finished) in few statements and round trips.

`taskexec.services.lifecycle` sends the common cases here and keeps `TaskManager`'s ORM code for the rest (a
redelivery, a stale token, a retry, a failed output check). Statements are built once; the UPDATEs take
any number of reports at once (a pool sends its threads' reports together), as one JSON document:

* `insert_tasks`: the task rows, their ``task.instance.created`` events and outbox rows. For one task
  this is one statement in autocommit (one round trip): the INSERT of the task is guarded by "its
  definition version is still the latest", and the event and outbox rows are inserted only for a task
  row that was. Several tasks: one transaction, one executemany per table.
* `start`: ``UPDATE ... FROM json_to_recordset(:reports) u WHERE status = 'PENDING' AND dispatch_token =
  u.token RETURNING ...``
* `finish`: ``UPDATE ... FROM json_to_recordset(:reports) u WHERE status = 'RUNNING' AND attempt = u.attempt
  RETURNING ...``
* `record`: the audit events and outbox rows of any number of changes, one INSERT statement.

Both UPDATEs bump ``version`` like `statemachine.transition` does, so the ORM paths' optimistic checks
see every change. PostgreSQL (jsonb, arrays), like the rest.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Insert, Table, bindparam, func, insert, literal_column, select, text
from sqlalchemy.types import DateTime

from taskexec.core.constants import Status
from taskexec.store.models import OutboxMessage, TaskDefinition, TaskEvent, TaskInstance
from taskexec.store.taskstore import LATEST_DEFINITION

_TASKS: Table = TaskInstance.metadata.tables[TaskInstance.__tablename__]
_EVENTS: Table = TaskEvent.metadata.tables[TaskEvent.__tablename__]
_OUTBOX: Table = OutboxMessage.metadata.tables[OutboxMessage.__tablename__]
TASK_COLUMNS = ("id", "definition_id", "definition_version", "type", "status", "priority", "input",
                "workflow_instance_id", "correlation_id", "callback_url", "execution_config", "idempotency_key",
                "created_by", "dispatch_token", "available_at", "queue_deadline", "execution_metadata",
                "retry_count", "attempt", "version", "created_at", "updated_at")
MAX_OUTBOX_TARGETS = 2  # orchestrator and the task's callback


@dataclass
class TaskRow:
    """A task as the hot paths' UPDATE returns it (the fields `events.TaskLike` and the metrics read)."""

    id: str
    type: str
    status: str
    priority: str
    input: Any
    output: Any
    error: Any
    workflow_instance_id: str | None
    correlation_id: str | None
    definition_id: str
    definition_version: Any
    execution_config: dict[str, Any] | None
    retry_count: int
    attempt: int
    dispatch_token: str | None
    created_at: datetime
    available_at: datetime | None
    callback_url: str | None
    execution_metadata: dict[str, Any] | None
    claimed_at: datetime | None


_RETURNING = ", ".join(f"t.{f.name}" for f in fields(TaskRow))
_NOW = bindparam("now", type_=DateTime(timezone=True))
# The reports travel as one JSON array each (json_to_recordset): PostgreSQL parses it in C, where binding
# an array per column costs psycopg a Python call per element.
_START = text(f"""
UPDATE task_instances AS t
SET status = '{Status.RUNNING.value}', version = t.version + 1, updated_at = :now, attempt = t.attempt + 1,
    worker_id = u.worker,
    execution_metadata = (COALESCE(t.execution_metadata, '{{}}'::jsonb) - 'endTime' - 'startId') || u.meta
FROM json_to_recordset(CAST(:reports AS json)) AS u(n int, id varchar, token varchar, worker varchar, meta jsonb)
WHERE t.id = u.id AND t.status = '{Status.PENDING.value}' AND t.dispatch_token = u.token
RETURNING u.n, {_RETURNING}""").bindparams(_NOW)

# durationMs: the worker's own figure, else from the attempt's startTime to now (as TaskManager.finish does)
_FINISH = text(f"""
UPDATE task_instances AS t
SET status = u.target, version = t.version + 1, updated_at = :now, output = u.output, error = u.error,
    execution_metadata = COALESCE(t.execution_metadata, '{{}}'::jsonb) || u.meta
        || CASE WHEN u.own_duration OR NOT jsonb_exists(COALESCE(t.execution_metadata, '{{}}'::jsonb), 'startTime')
                THEN '{{}}'::jsonb
                ELSE jsonb_build_object('durationMs', trunc(extract(epoch FROM
                         (:now - CAST(t.execution_metadata->>'startTime' AS timestamptz))) * 1000)::bigint) END,
    stdout = CASE WHEN u.logs THEN u.stdout ELSE t.stdout END,
    stderr = CASE WHEN u.logs THEN u.stderr ELSE t.stderr END
FROM json_to_recordset(CAST(:reports AS json))
     AS u(n int, id varchar, attempt int, target varchar, output jsonb, error jsonb, meta jsonb, own_duration bool,
          logs bool, stdout text, stderr text)
WHERE t.id = u.id AND t.status = '{Status.RUNNING.value}' AND t.attempt = u.attempt
RETURNING u.n, {_RETURNING}""").bindparams(_NOW)

_RECORD = text("""
WITH e AS (
    INSERT INTO task_events (task_id, type, from_status, to_status, actor, details, created_at)
    SELECT task_id, type, from_status, to_status, actor, details, created_at
    FROM json_to_recordset(CAST(:events AS json))
         AS u(task_id varchar, type varchar, from_status varchar, to_status varchar, actor varchar, details jsonb,
              created_at timestamptz)
)
INSERT INTO outbox (event_id, task_id, target, url, body, attempts, next_attempt_at, created_at)
SELECT event_id, task_id, target, url, body, 0, next_attempt_at, next_attempt_at
FROM json_to_recordset(CAST(:outbox AS json))
     AS u(event_id varchar, task_id varchar, target varchar, url varchar, body text, next_attempt_at timestamptz)""")


@dataclass
class Start:
    """One start report for `start`."""

    task_id: str
    token: str
    worker: str
    meta: dict[str, Any]


@dataclass
class Finish:
    """One finish report for `finish`."""

    task_id: str
    attempt: int
    target: str
    output: Any
    error: dict[str, Any] | None
    meta: dict[str, Any]
    logs: bool
    stdout: str | None
    stderr: str | None


def start(conn: Connection, reports: Sequence[Start], now: datetime) -> dict[int, TaskRow]:
    """PENDING -> RUNNING for each report whose token is the task's current one; {report index: task}."""
    rows = [{"n": i, "id": r.task_id, "token": r.token, "worker": r.worker, "meta": r.meta}
            for i, r in enumerate(reports)]
    result = conn.execute(_START, {"reports": _json(rows), "now": now})
    return {row[0]: TaskRow(*row[1:]) for row in result}


def finish(conn: Connection, reports: Sequence[Finish], now: datetime) -> dict[int, TaskRow]:
    """RUNNING -> target for each report of the task's current attempt; {report index: task}."""
    rows = [{"n": i, "id": r.task_id, "attempt": r.attempt, "target": r.target, "output": r.output, "error": r.error,
             "meta": r.meta, "own_duration": "durationMs" in r.meta, "logs": r.logs, "stdout": r.stdout,
             "stderr": r.stderr} for i, r in enumerate(reports)]
    result = conn.execute(_FINISH, {"reports": _json(rows), "now": now})
    return {row[0]: TaskRow(*row[1:]) for row in result}


def record(conn: Connection, events: Sequence[dict[str, Any]], outbox: Sequence[dict[str, Any]]) -> None:
    """Insert audit events and outbox rows (column dicts, as `lifecycle` and `events.outbox_rows` make
    them) in one statement."""
    conn.execute(_RECORD, {
        "events": _json([{k: e[k] for k in ("task_id", "type", "from_status", "to_status", "actor", "details",
                                            "created_at")} for e in events]),
        "outbox": _json([{k: o[k] for k in ("event_id", "task_id", "target", "url", "body", "next_attempt_at")}
                         for o in outbox])})


def insert_one(conn: Connection, task: dict[str, Any], event: dict[str, Any], outbox: Sequence[dict[str, Any]]) -> bool:
    """Store one task (TASK_COLUMNS), its created event and outbox rows, if its definition version is still
    the latest; False (nothing stored) when a newer version was registered meanwhile."""
    params = {f"t_{c}": task[c] for c in TASK_COLUMNS}
    params["def_id"] = task["definition_id"]
    params.update({f"e_{c}": event[c] for c in ("type", "to_status", "actor", "created_at")})
    for i, row in enumerate(outbox):
        params.update({f"o{i}_{c}": row[c] for c in ("event_id", "target", "url", "body", "next_attempt_at")})
    return bool(conn.execute(_insert_one(len(outbox)), params).scalar())


def insert_many(conn: Connection, tasks: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]],
                outbox: Sequence[dict[str, Any]]) -> None:
    """Store tasks (their definition versions checked by the caller), events and outbox rows: one executemany
    per table, in the caller's transaction."""
    for table, rows in ((_TASKS, tasks), (_EVENTS, events), (_OUTBOX, outbox)):
        if rows:
            conn.execute(insert(table), list(rows))


@functools.lru_cache(maxsize=MAX_OUTBOX_TARGETS + 1)
def _insert_one(targets: int) -> Any:
    """The single-task statement of `insert_one` with `targets` outbox rows (Core, cached compiled)."""
    latest = LATEST_DEFINITION.with_only_columns(TaskDefinition.version).scalar_subquery()  # :def_id
    values = select(*[bindparam(f"t_{c}", type_=_TASKS.c[c].type) for c in TASK_COLUMNS]).where(
        bindparam("t_definition_version", type_=_TASKS.c.definition_version.type) == latest)
    stored = insert(_TASKS).from_select(list(TASK_COLUMNS), values).returning(_TASKS.c.id).cte("stored")
    event_cols = ("task_id", "type", "to_status", "actor", "created_at")
    event = insert(_EVENTS).from_select(list(event_cols), select(
        stored.c.id, *[bindparam(f"e_{c}", type_=_EVENTS.c[c].type) for c in event_cols[1:]]))
    parts: list[Insert] = [event]
    outbox_cols = ("event_id", "task_id", "target", "url", "body", "attempts", "next_attempt_at", "created_at")
    for i in range(targets):
        def p(c: str, i: int = i) -> Any:
            return bindparam(f"o{i}_{c}", type_=_OUTBOX.c[c].type)
        parts.append(insert(_OUTBOX).from_select(list(outbox_cols), select(
            p("event_id"), stored.c.id, p("target"), p("url"), p("body"), literal_column("0"),
            p("next_attempt_at"), p("next_attempt_at"))))
    query = select(func.count()).select_from(stored)
    for i, part in enumerate(parts):
        query = query.add_cte(part.cte(f"w{i}"))
    return query


def _json(value: Any) -> str:
    """JSON for PostgreSQL: datetimes as ISO 8601 (with their offset), which timestamptz reads back exactly."""
    return json.dumps(value, separators=(",", ":"), default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
