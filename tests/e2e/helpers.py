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
