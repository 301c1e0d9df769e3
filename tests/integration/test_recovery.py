"""Tasks whose worker vanished: the reaper's `lost` report and the stale-RUNNING sweep (router side)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api_helpers import API, create_definition, definition, sql, submit
from tests.conftest import auth

SERVICE = auth("pool-1", "service")


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[Any]:
    """The router with no grace for stale attempts, so a 1 s task is stale one second after it starts."""
    from api import create_app
    from taskexec.core.config import Settings

    s = Settings(**{k: v for k, v in env.items() if k.startswith(("TEL_", "DATABASE_URL", "CELERY_", "LOG_"))},
                 TEL_STALE_RUNNING_GRACE=0)
    app = create_app(s, start_dispatcher=False)
    yield app
    app.extensions["taskexec"].db.dispose()


def _running(client: Any, database: str, admin: dict[str, str], *, max_retries: int, timeout_s: int = 1) -> str:
    def_id = f"greet-{max_retries}-{timeout_s}"
    body = definition(id=def_id, retryPolicy={"maxRetries": max_retries, "retryInterval": 0})
    body["executionConfig"] = {**body["executionConfig"], "resourceRequirements": {"timeoutSeconds": timeout_s}}
    create_definition(client, admin, body)
    task_id = submit(client, admin, def_id)
    token = sql(database, "SELECT dispatch_token FROM task_instances WHERE id = %s", task_id)[0][0]
    r = client.post(f"/internal/v1/tasks/{task_id}/start", json={"dispatchToken": token, "workerId": "gone:1"},
                    headers=SERVICE)
    assert r.status_code == 200 and r.json["job"], r.json
    return task_id


def _task(client: Any, task_id: str, admin: dict[str, str]) -> dict[str, Any]:
    return client.get(f"{API}/tasks/{task_id}", headers=admin).json  # type: ignore[no-any-return]


def test_lost_attempt_is_retried_with_a_new_dispatch_token(client: Any, database: str, admin: dict[str, str]) -> None:
    task_id = _running(client, database, admin, max_retries=2)
    old_token = sql(database, "SELECT dispatch_token FROM task_instances WHERE id = %s", task_id)[0][0]
    r = client.post(f"/internal/v1/tasks/{task_id}/lost", json={"attempt": 1, "reason": "container reaped"},
                    headers=SERVICE)
    assert r.status_code == 200 and r.json["changed"] is True and r.json["status"] == "PENDING"
    task = _task(client, task_id, admin)
    assert task["status"] == "PENDING" and task["retryCount"] == 1
    assert task["executionMetadata"]["lastError"]["code"] == "SANDBOX_ERROR"  # our fault, per the contract
    assert task["executionMetadata"]["lastError"]["details"]["reason"] == "WORKER_LOST"
    # the message still sitting in the broker is now stale: a redelivery of it does not run
    r = client.post(f"/internal/v1/tasks/{task_id}/start", json={"dispatchToken": old_token, "workerId": "w2"},
                    headers=SERVICE)
    assert r.json["job"] is None and "stale" in r.json["reason"]


def test_lost_report_for_an_older_attempt_changes_nothing(client: Any, database: str, admin: dict[str, str]) -> None:
    task_id = _running(client, database, admin, max_retries=2)
    r = client.post(f"/internal/v1/tasks/{task_id}/lost", json={"attempt": 7}, headers=SERVICE)
    assert r.status_code == 200 and r.json["changed"] is False
    assert _task(client, task_id, admin)["status"] == "RUNNING"


def test_lost_requires_the_service_credential(client: Any, database: str, admin: dict[str, str]) -> None:
    task_id = _running(client, database, admin, max_retries=0)
    r = client.post(f"/internal/v1/tasks/{task_id}/lost", json={}, headers=auth("olga", "operator"))
    assert r.status_code == 403 and r.json["error"]["code"]


def test_stale_sweep_fails_attempts_past_deadline_when_retries_are_spent(
        client: Any, database: str, admin: dict[str, str]) -> None:
    task_id = _running(client, database, admin, max_retries=0, timeout_s=1)
    fresh = _running(client, database, admin, max_retries=0, timeout_s=600)
    sql(database, "UPDATE task_instances SET updated_at = now() - interval '5 seconds' WHERE id IN (%s, %s)",
        task_id, fresh)
    sql(database, "UPDATE task_instances SET execution_metadata = jsonb_set(execution_metadata::jsonb, "
                  "'{startTime}', to_jsonb((now() - interval '5 seconds')::text))::json WHERE id IN (%s, %s)",
        task_id, fresh)
    r = client.post("/internal/v1/sweeps/stale", headers=SERVICE)
    assert r.status_code == 200 and r.json["stale"] == [task_id]
    task = _task(client, task_id, admin)
    assert task["status"] == "FAILED" and task["error"]["code"] == "SANDBOX_ERROR"
    assert task["error"]["details"]["reason"] == "WORKER_LOST"
    assert _task(client, fresh, admin)["status"] == "RUNNING"  # within its 600 s: left alone
    events = [e["type"] for e in client.get(f"{API}/tasks/{task_id}/events", headers=admin).json["items"]]
    assert events[-1] == "task.instance.failed"
