"""HTTP helpers for end-to-end tests against a running stack."""

from __future__ import annotations

from typing import Any

import requests

from tests.conftest import auth
from tests.support import Stack, wait_for

ADMIN = auth("admin", "admin")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


def define(stack: Stack, definition: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(f"{stack.url}/api/v1/tasks/definitions", json=definition, headers=ADMIN, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def python_def(def_id: str, code: str, **config: Any) -> dict[str, Any]:
    return {"id": def_id, "name": def_id, "type": "AUTOMATED",
            "executionConfig": {"runtime": "python", "code": code, **config}}


def submit(stack: Stack, def_id: str, input: Any = None, headers: dict[str, str] | None = None, **body: Any
           ) -> requests.Response:
    payload = {"taskDefinitionId": def_id, "input": input if input is not None else {}, **body}
    return requests.post(f"{stack.url}/api/v1/tasks", json=payload, headers={**ADMIN, **(headers or {})}, timeout=10)


def get(stack: Stack, task_id: str, suffix: str = "") -> dict[str, Any]:
    r = requests.get(f"{stack.url}/api/v1/tasks/{task_id}{suffix}", headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def wait_status(stack: Stack, task_id: str, statuses: set[str] | None = None, timeout: float = 60) -> dict[str, Any]:
    wanted = statuses or TERMINAL

    def check() -> dict[str, Any] | None:
        task = get(stack, task_id)
        return task if task["status"] in wanted else None

    return wait_for(check, timeout, what=f"task {task_id} in {sorted(wanted)}")  # type: ignore[no-any-return]


def finish_via_internal_api(stack: Stack, task_id: str, status: str = "FAILED", retry: bool = True,
                            **result: Any) -> dict[str, Any]:
    """Start and finish the task's attempt through the internal API, as a pool would (no worker, no Docker).

    FAILED with `retry` and no retries left leaves a dead letter.
    """
    import psycopg

    with psycopg.connect(stack.env["DATABASE_URL"].replace("+psycopg", "")) as conn:
        row = conn.execute("SELECT dispatch_token FROM task_instances WHERE id = %s", (task_id,)).fetchone()
    key = {"X-API-Key": stack.service_key}
    r = requests.post(f"{stack.url}/internal/v1/tasks/{task_id}/start", headers=key, timeout=10,
                      json={"dispatchToken": row[0] if row else "", "workerId": "w-test"})
    assert r.status_code == 200 and r.json()["job"], r.text
    body = {"attempt": r.json()["job"]["attempt"], "status": status, "retry": retry, **result}
    if status == "FAILED":
        body.setdefault("error", {"code": "NON_ZERO_EXIT", "message": "boom"})
    r = requests.post(f"{stack.url}/internal/v1/tasks/{task_id}/finish", headers=key, timeout=10, json=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]
