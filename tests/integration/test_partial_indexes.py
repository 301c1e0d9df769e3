"""Migration 0008's partial indexes on a real PostgreSQL: each holds only the rows its queries can match,
and the queries that run on every dispatcher pass or sweep can use them (PostgreSQL uses a partial
index only for a query whose conditions imply its predicate: a query and its index drifting apart would
leave the query scanning the whole table)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection

from taskexec.core.config import Settings
from taskexec.services import dispatch, queue_timeout
from taskexec.store.db import Database
from taskexec.store.models import utcnow
from tests.api_helpers import create_definition, sql, submit


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    d = Database(settings.database_url)
    yield d
    d.dispose()


def plan(conn: Connection, statement: Any, params: dict[str, Any]) -> str:
    """PostgreSQL's plan for `statement` when it may not scan the table itself."""
    compiled = statement.compile(dialect=conn.dialect)
    bound = compiled.construct_params(params)
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    rows = conn.exec_driver_sql("EXPLAIN " + str(compiled), bound).all()
    return "\n".join(r[0] for r in rows)


def test_the_hot_queries_use_the_partial_indexes(db: Database) -> None:
    """Each may use a partial index (here, on empty tables, PostgreSQL may pick either PENDING-only one)."""
    pending_only = ("ix_task_instances_dispatch", "ix_task_instances_queue_deadline")
    now = utcnow()
    with db.engine.begin() as conn:
        for statement, params in ((dispatch._any_due(), {"now": now}), (dispatch._due(100), {"now": now}),
                                  (dispatch._overdue(100), {"before": now}),
                                  (queue_timeout.due(now, now - timedelta(days=1)), {})):
            chosen = plan(conn, statement, params)
            assert any(f"Index Scan using {index} " in chosen for index in pending_only), chosen


def test_a_started_task_leaves_the_pending_indexes(client: Any, admin: dict[str, str], database: str) -> None:
    """The predicates, on rows: a started task is out of the dispatcher's and the queue-timeout sweep's
    indexes, a task without assignee, deadline, workflow or key is in none of theirs, and a key stays
    unique."""
    create_definition(client, admin)
    waiting, started = submit(client, admin), submit(client, admin)
    sql(database, "UPDATE task_instances SET status = 'RUNNING' WHERE id = %s", started)

    def indexed(index: str, predicate: str, table: str = "task_instances") -> set[Any]:
        """The rows of `table` in `index`, once its definition is checked to carry `predicate`."""
        [(definition,)] = sql(database, "SELECT indexdef FROM pg_indexes WHERE indexname = %s", index)
        assert definition.endswith(f"WHERE {predicate}"), definition
        return {row_id for (row_id,) in sql(database, f"SELECT id FROM {table} WHERE {predicate}")}

    pending = "((status)::text = 'PENDING'::text)"
    assert indexed("ix_task_instances_dispatch", pending) == {waiting}
    assert indexed("ix_task_instances_queue_deadline", pending) == {waiting}
    for column in ("assignee", "due_date", "workflow_instance_id", "correlation_id", "idempotency_key"):
        assert indexed(f"ix_task_instances_{column}", f"({column} IS NOT NULL)") == set()

    keyed = {**admin, "Idempotency-Key": "partial-index-key"}
    first = client.post("/api/v1/tasks", headers=keyed, json={"taskDefinitionId": "greet", "input": {"name": "A"}})
    again = client.post("/api/v1/tasks", headers=keyed, json={"taskDefinitionId": "greet", "input": {"name": "A"}})
    assert first.status_code == 201 and again.json["id"] == first.json["id"]
    [(key,)] = sql(database, "SELECT idempotency_key FROM task_instances WHERE id = %s", first.json["id"])
    with pytest.raises(psycopg.errors.UniqueViolation, match="ix_task_instances_idempotency_key"):
        sql(database, "UPDATE task_instances SET idempotency_key = %s WHERE id = %s", key, waiting)
