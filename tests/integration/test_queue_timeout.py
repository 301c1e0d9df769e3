"""Queued timeout (router side): a task no worker takes in time ends TIMED_OUT with QUEUE_TIMEOUT.

Real router app, real PostgreSQL and Redis broker; the `queued` sweep is called as the manual pool calls
it (POST /internal/v1/sweeps/queued with a service credential).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.api_helpers import API, create_definition, definition, sql, submit
from tests.conftest import auth
from tests.support import wait_for

SERVICE = auth("pool-1", "service")


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[Any]:
    """The router with a 2 s default queued timeout and an orchestrator, so events land in the outbox."""
    from api import create_app
    from taskexec.core.config import Settings

    s = Settings(**{k: v for k, v in env.items() if k.startswith(("TEL_", "DATABASE_URL", "CELERY_", "LOG_"))},
                 TEL_QUEUED_TIMEOUT=2, WORKFLOW_ORCHESTRATOR_URL="http://127.0.0.1:9/unused")
    app = create_app(s, start_dispatcher=False)
    yield app
    app.extensions["taskexec"].db.dispose()


def sweep_until(client: Any, task_id: str) -> list[str]:
    def swept() -> list[str] | None:
        r = client.post("/internal/v1/sweeps/queued", headers=SERVICE)
        assert r.status_code == 200, r.json
        return r.json["queued"] if task_id in r.json["queued"] else None

    return wait_for(swept, 20, interval=0.3, what=f"task {task_id} timed out in its queue")  # type: ignore[no-any-return]


def deadline_of(database: str, task_id: str) -> tuple[datetime, datetime, datetime]:
    row = sql(database, "SELECT created_at, available_at, queue_deadline FROM task_instances WHERE id = %s", task_id)
    return row[0]  # type: ignore[return-value]


def test_a_task_nobody_takes_times_out_and_a_late_message_runs_nothing(
        client: Any, admin: dict[str, str], database: str) -> None:
    create_definition(client, admin)
    task_id = submit(client, admin)
    created, _, deadline = deadline_of(database, task_id)
    assert deadline == created + timedelta(seconds=2)  # TEL_QUEUED_TIMEOUT
    token = sql(database, "SELECT dispatch_token FROM task_instances WHERE id = %s", task_id)[0][0]
    assert sweep_until(client, task_id) == [task_id]
    task = client.get(f"{API}/tasks/{task_id}", headers=admin).json
    assert task["status"] == "TIMED_OUT", task
    assert task["error"]["code"] == "QUEUE_TIMEOUT"
    assert task["error"]["details"]["limitSeconds"] == 2 and task["error"]["details"]["queue"].endswith("-automated")
    outbox = [r[0] for r in sql(database, "SELECT body::json->>'type' FROM outbox WHERE task_id = %s ORDER BY id",
                                task_id)]
    assert outbox == ["task.instance.created", "task.instance.timed_out"]
    assert sql(database, "SELECT error->>'code' FROM dead_letters WHERE task_id = %s", task_id) == [("QUEUE_TIMEOUT",)]
    # the message still on the broker arrives late: the start call refuses it
    r = client.post(f"/internal/v1/tasks/{task_id}/start", json={"dispatchToken": token, "workerId": "late:1"},
                    headers=SERVICE)
    assert r.status_code == 200 and r.json["job"] is None and "TIMED_OUT" in r.json["reason"], r.json
    # a second sweep finds nothing more
    assert client.post("/internal/v1/sweeps/queued", headers=SERVICE).json["queued"] == []


def test_the_definition_and_the_submission_override_the_default(
        client: Any, admin: dict[str, str], database: str) -> None:
    body = definition(id="patient")
    body["executionConfig"] = {**body["executionConfig"], "queuedTimeoutSeconds": 3600}
    create_definition(client, admin, body)
    patient = submit(client, admin, "patient")
    hasty = submit(client, admin, "patient", executionConfig={"queuedTimeoutSeconds": 1})
    created, _, deadline = deadline_of(database, patient)
    assert deadline == created + timedelta(seconds=3600)
    created, _, deadline = deadline_of(database, hasty)
    assert deadline == created + timedelta(seconds=1)
    assert sweep_until(client, hasty) == [hasty]
    assert client.get(f"{API}/tasks/{patient}", headers=admin).json["status"] == "PENDING"


def test_a_retry_waits_anew_from_when_it_is_due(client: Any, admin: dict[str, str], database: str) -> None:
    create_definition(client, admin, definition(retryPolicy={"maxRetries": 1, "retryInterval": 60000}))
    task_id = submit(client, admin)
    token = sql(database, "SELECT dispatch_token FROM task_instances WHERE id = %s", task_id)[0][0]
    r = client.post(f"/internal/v1/tasks/{task_id}/start", json={"dispatchToken": token, "workerId": "w:1"},
                    headers=SERVICE)
    assert r.json["job"] is not None
    r = client.post(f"/internal/v1/tasks/{task_id}/finish", headers=SERVICE,
                    json={"attempt": 1, "status": "FAILED", "retry": True,
                          "error": {"code": "SANDBOX_ERROR", "message": "engine down"}})
    assert r.json["status"] == "PENDING"
    _, available, deadline = deadline_of(database, task_id)
    assert deadline == available + timedelta(seconds=2)  # not from submission: the backoff wait does not count


def test_rows_from_before_the_migration_use_the_default(client: Any, admin: dict[str, str], database: str) -> None:
    create_definition(client, admin)
    task_id = submit(client, admin)
    sql(database, "UPDATE task_instances SET queue_deadline = NULL, available_at = now() - interval '1 minute' "
                  "WHERE id = %s", task_id)
    assert sweep_until(client, task_id) == [task_id]


@pytest.mark.parametrize("value", [0, -1, "soon", 30 * 86400 + 1])
def test_a_bad_queued_timeout_is_422_naming_the_field(client: Any, admin: dict[str, str], value: Any) -> None:
    body = definition()
    body["executionConfig"] = {**body["executionConfig"], "queuedTimeoutSeconds": value}
    r = client.post(f"{API}/tasks/definitions", json=body, headers=admin)
    assert r.status_code == 422, r.json
    assert r.json["error"]["details"][0]["field"] == "executionConfig.queuedTimeoutSeconds"
