"""The Python client of the public API (`/api/v1`): typed results, errors as exceptions.

    from taskexec.clients.sdk import TaskexecClient

    with TaskexecClient.from_env() as tel:                # TEL_API_URL, TEL_API_TOKEN (a JWT or an API key)
        sent = tel.submit("hello-python", {"name": "Ada"}, idempotency_key="order-17")
        task = tel.wait(sent.id, timeout=60)              # polls with backoff until a final status
        print(task.status, task.output)

Every error answer of the router is raised as the exception its envelope's `code` stands for
(`taskexec.core.exceptions`: `NotFound`, `Conflict`, `ValidationFailed`, `Unauthorized`, `Forbidden`, ...), with
`.code`, `.message`, `.details`, `.field` and `.status`. An unreachable router is `Unavailable` after the
retries (only requests that are safe to repeat are retried). This is not `taskexec.clients.client`, which is the worker
pools' client of the internal API.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests

from taskexec.clients.sdk_models import (
    BatchItemResult,
    Claimed,
    Completed,
    DeadLetter,
    Definition,
    Event,
    InboxTask,
    InboxTaskDetail,
    Logs,
    Me,
    Page,
    Reassigned,
    Redriven,
    Submitted,
    Task,
    TaskStatus,
    page_of,
)
from taskexec.core.config import load_client_settings
from taskexec.core.constants import API_PREFIX, TERMINAL_STATUSES, Priority, Status, TaskType
from taskexec.core.exceptions import TaskexecError, Unavailable, WaitTimeout, from_envelope

RETRY_STATUSES = frozenset({502, 503, 504})


def credential_headers(token: str | None) -> dict[str, str]:
    """A JWT (three dot-separated parts) goes in `Authorization: Bearer`; anything else is an API key."""
    token = (token or "").strip()
    if not token:
        return {}
    return {"Authorization": f"Bearer {token}"} if token.count(".") == 2 else {"X-API-Key": token}


class TaskexecClient:
    """A connection to one router. Thread-safe as far as `requests.Session` is (one client per thread is safest)."""

    def __init__(self, url: str = "http://127.0.0.1:8081", token: str | None = None, *, timeout: float = 30.0,
                 retries: int = 2, session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.http = session or requests.Session()
        self.http.headers.update({"Accept": "application/json", **credential_headers(token)})

    @classmethod
    def from_env(cls, **kwargs: Any) -> TaskexecClient:
        """A client for `TEL_API_URL` (default http://127.0.0.1:8081) with `TEL_API_TOKEN`."""
        settings = load_client_settings()
        token = settings.api_token.get_secret_value() if settings.api_token else None
        return cls(settings.api_url, token, **kwargs)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> TaskexecClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------ transport

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, retry: bool | None = None) -> requests.Response:
        """One call to `API_PREFIX + path`; a 2xx answer or the error envelope raised as an exception.

        `retry` (default: for GET and PUT) repeats the call on a connection error or a 502/503/504, with backoff.
        """
        retry = method in ("GET", "PUT") if retry is None else retry
        attempts = 1 + (self.retries if retry else 0)
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        for attempt in range(attempts):
            try:
                resp = self.http.request(method, self.url + API_PREFIX + path, json=json, params=query,
                                         headers=dict(headers or {}), timeout=self.timeout)
            except requests.RequestException as exc:
                if attempt + 1 >= attempts:
                    raise Unavailable(f"router unreachable at {self.url}: {type(exc).__name__}") from exc
            else:
                if resp.status_code < 400:
                    return resp
                if resp.status_code not in RETRY_STATUSES or attempt + 1 >= attempts:
                    raise from_envelope(resp.status_code, _json(resp))
            time.sleep(min(0.25 * 2 ** attempt, 2.0))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _get(self, path: str, **params: Any) -> Any:
        return _json(self.request("GET", path, params=params))

    def _post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return _json(self.request("POST", path, json=body, **kwargs))

    # ------------------------------------------------------------ definitions

    def register_definition(self, definition: Mapping[str, Any]) -> Definition:
        """Register a definition (or, with the same id, its next version): `POST /tasks/definitions`."""
        return Definition.model_validate(self._post("/tasks/definitions", dict(definition)))

    def apply_definition(self, definition: Mapping[str, Any]) -> tuple[Definition, bool]:
        """Register `definition` only if it differs from the latest version; returns (definition, created)."""
        resp = self.request("PUT", f"/tasks/definitions/{_seg(str(definition.get('id', '')))}", json=dict(definition))
        return Definition.model_validate(_json(resp)), resp.status_code == 201

    def get_definition(self, definition_id: str, version: str | None = None) -> Definition:
        return Definition.model_validate(self._get(f"/tasks/definitions/{_seg(definition_id)}", version=version))

    def list_definitions(self, *, type: TaskType | str | None = None, search: str | None = None, page: int = 1,
                         limit: int = 20) -> Page[Definition]:
        """Latest version of each definition, by id."""
        return page_of(Definition, self._get("/tasks/definitions", type=type, search=search, page=page, limit=limit))

    # ------------------------------------------------------------ tasks

    def submit(self, definition_id: str, input: Any = None, *, priority: Priority | str | None = None,
               idempotency_key: str | None = None, correlation_id: str | None = None,
               workflow_instance_id: str | None = None, callback_url: str | None = None,
               execution_config: Mapping[str, Any] | None = None) -> Submitted:
        """Submit a task. The same `idempotency_key` with the same body returns the first task (`replayed`).

        Without a key the client makes one up for this call, so that its own retries never submit twice.
        """
        body: dict[str, Any] = {"taskDefinitionId": definition_id, "input": {} if input is None else input}
        for key, value in (("priority", priority), ("correlationId", correlation_id),
                           ("workflowInstanceId", workflow_instance_id), ("callbackUrl", callback_url),
                           ("executionConfig", dict(execution_config) if execution_config else None)):
            if value is not None:
                body[key] = str(value) if key == "priority" else value
        key = idempotency_key or f"sdk-{uuid.uuid4()}"
        resp = self.request("POST", "/tasks", json=body, headers={"Idempotency-Key": key}, retry=True)
        return Submitted.model_validate({**_json(resp), "replayed": resp.status_code == 200})

    def submit_batch(self, items: Sequence[Mapping[str, Any]]) -> list[BatchItemResult]:
        """Submit up to 1,000 tasks in one request (`POST /tasks/batch`). Each item is a submission body as
        the API spells it (`taskDefinitionId`, `input`, `priority`, ..., optional `idempotencyKey`); one
        result per item, in order, the valid items stored even when others are not. Items without a key get
        one made up here, so that the client's own retries never store a task twice."""
        body = {"tasks": [{**item, "idempotencyKey": item.get("idempotencyKey") or f"sdk-{uuid.uuid4()}"}
                          for item in items]}
        data = _json(self.request("POST", "/tasks/batch", json=body, retry=True))
        return [BatchItemResult.model_validate(r) for r in data["results"]]

    def get(self, task_id: str) -> Task:
        return Task.model_validate(self._get(f"/tasks/{_seg(task_id)}"))

    def list_tasks(self, *, status: Status | str | None = None, type: TaskType | str | None = None,
                   definition_id: str | None = None, correlation_id: str | None = None,
                   workflow_instance_id: str | None = None, assignee: str | None = None,
                   created_after: datetime | None = None, created_before: datetime | None = None,
                   search: str | None = None, page: int = 1, limit: int = 20) -> Page[Task]:
        """Tasks, newest first. `search` is a task id (or its first characters) or a correlation id;
        `created_after`/`created_before` must be timezone-aware."""
        return page_of(Task, self._get(
            "/tasks", status=status, type=type, taskDefinitionId=definition_id, correlationId=correlation_id,
            workflowInstanceId=workflow_instance_id, assignee=assignee, createdAfter=created_after,
            createdBefore=created_before, search=search, page=page, limit=limit))

    def wait(self, task_id: str, *, timeout: float = 300.0, interval: float = 0.2, max_interval: float = 5.0,
             until: Iterable[Status | str] = TERMINAL_STATUSES) -> Task:
        """Poll until the task reaches one of `until` (default: a final status); backoff ×1.5 up to
        `max_interval`. Raises `WaitTimeout` after `timeout` seconds."""
        wanted = {str(s) for s in until}
        start = time.monotonic()
        delay = interval
        while True:
            task = self.get(task_id)
            if task.status in wanted:
                return task
            waited = time.monotonic() - start
            if waited >= timeout:
                raise WaitTimeout(task_id, task.status, waited)
            time.sleep(min(delay, max(0.0, timeout - waited)))
            delay = min(delay * 1.5, max_interval)

    def logs(self, task_id: str) -> Logs:
        return Logs.model_validate(self._get(f"/tasks/{_seg(task_id)}/logs"))

    def events(self, task_id: str) -> list[Event]:
        return [Event.model_validate(e) for e in self._get(f"/tasks/{_seg(task_id)}/events")["items"]]

    def cancel(self, task_id: str, reason: str | None = None) -> TaskStatus:
        return TaskStatus.model_validate(self._post(f"/tasks/{_seg(task_id)}/cancel", {"reason": reason}))

    def retry(self, task_id: str) -> TaskStatus:
        """Run a FAILED or TIMED_OUT task again (409 `Conflict` otherwise)."""
        return TaskStatus.model_validate(self._post(f"/tasks/{_seg(task_id)}/retry"))

    # ------------------------------------------------------------ manual tasks

    def inbox(self, *, page: int = 1, limit: int = 20) -> Page[InboxTask]:
        """Your open manual tasks (yours, or offered to you or your roles), by priority then due date."""
        return page_of(InboxTask, self._get("/inbox", page=page, limit=limit))

    def inbox_task(self, task_id: str) -> InboxTaskDetail:
        return InboxTaskDetail.model_validate(self._get(f"/inbox/{_seg(task_id)}"))

    def claim(self, task_id: str) -> Claimed:
        return Claimed.model_validate(self._post(f"/tasks/{_seg(task_id)}/claim"))

    def complete(self, task_id: str, output: Any) -> Completed:
        """Complete a manual task; an output failing its schema is `ValidationFailed` (the task stays open)."""
        return Completed.model_validate(self._post(f"/tasks/{_seg(task_id)}/complete", {"output": output}))

    def reassign(self, task_id: str, new_assignee: str, reason: str | None = None) -> Reassigned:
        return Reassigned.model_validate(self._post(f"/tasks/{_seg(task_id)}/reassign",
                                                    {"newAssignee": new_assignee, "reason": reason}))

    # ------------------------------------------------------------ dead letters, identity

    def dead_letters(self, *, resolved: bool | None = None, definition_id: str | None = None,
                     task_id: str | None = None, page: int = 1, limit: int = 20) -> Page[DeadLetter]:
        return page_of(DeadLetter, self._get("/deadletters", resolved=resolved, taskDefinitionId=definition_id,
                                             taskId=task_id, page=page, limit=limit))

    def redrive(self, dead_letter_id: str) -> Redriven:
        """Run a dead letter's task again (admin); a second re-drive is a `Conflict`."""
        return Redriven.model_validate(self._post(f"/deadletters/{_seg(dead_letter_id)}/redrive"))

    def me(self) -> Me:
        """Who the token belongs to, its roles and permissions."""
        return Me.model_validate(self._get("/me"))


def _seg(value: str) -> str:
    """One path segment: `/`, `?`, `#` and `..` in an id cannot reach another route."""
    return quote(value, safe="")


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _json(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise TaskexecError(f"HTTP {resp.status_code}: the answer is not JSON", status=resp.status_code) from None
