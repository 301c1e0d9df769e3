"""Submitting, listing, cancelling and retrying tasks; refused requests never write a row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.api_helpers import API, APPROVE, assert_envelope, count, create_definition, definition, sql, submit
from tests.conftest import auth

TASKS = f"{API}/tasks"


@pytest.fixture
def greet(client: Any, admin: dict[str, str]) -> None:
    create_definition(client, admin)


def test_submit_returns_201_and_a_pending_task(
    client: Any, admin: dict[str, str], greet: None, database: str
) -> None:
    r = client.post(
        TASKS,
        json={
            "taskDefinitionId": "greet",
            "input": {"name": "Ada"},
            "priority": "HIGH",
            "workflowInstanceId": "wf-1",
        },
        headers=admin,
    )
    assert r.status_code == 201, r.json
    assert set(r.json) == {"id", "status", "createdAt"} and r.json["status"] == "PENDING"
    datetime.fromisoformat(r.json["createdAt"])
    detail = client.get(f"{TASKS}/{r.json['id']}", headers=admin).json
    assert detail["priority"] == "HIGH" and detail["input"] == {"name": "Ada"} and detail["retryCount"] == 0
    assert (
        detail["correlationId"] == "wf-1"
        and detail["definitionVersion"] == "1.0.0"
        and detail["type"] == "AUTOMATED"
    )
    assert sql(database, "SELECT status, created_by FROM task_instances")[0] == ("PENDING", "admin")


def test_idempotency_key_replays_the_same_task(
    client: Any, admin: dict[str, str], greet: None, database: str
) -> None:
    body = {"taskDefinitionId": "greet", "input": {"name": "Ada"}}
    headers = {**admin, "Idempotency-Key": "order-42"}
    first = client.post(TASKS, json=body, headers=headers)
    second = client.post(TASKS, json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json["id"] == second.json["id"]
    assert count(database, "task_instances") == 1
    other = client.post(TASKS, json=body, headers={**admin, "Idempotency-Key": "order-43"})
    assert other.status_code == 201 and other.json["id"] != first.json["id"]
    assert_envelope(
        client.post(TASKS, json=body, headers={**admin, "Idempotency-Key": "k" * 256}),
        400,
        "VALIDATION_ERROR",
        "Idempotency-Key",
    )


def test_unknown_definition_is_404(client: Any, admin: dict[str, str], database: str) -> None:
    r = client.post(TASKS, json={"taskDefinitionId": "nope", "input": {}}, headers=admin)
    assert_envelope(r, 404, "NOT_FOUND")
    assert count(database, "task_instances") == 0


def test_input_failing_schema_lists_every_field(
    client: Any, admin: dict[str, str], greet: None, database: str
) -> None:
    r = client.post(
        TASKS, json={"taskDefinitionId": "greet", "input": {"name": 5, "times": 0}}, headers=admin
    )
    err = assert_envelope(r, 422, "VALIDATION_ERROR")
    assert {d["field"] for d in err["details"]} == {"input.name", "input.times"}
    r = client.post(TASKS, json={"taskDefinitionId": "greet", "input": {}}, headers=admin)
    assert_envelope(r, 422, "VALIDATION_ERROR", "input")
    assert count(database, "task_instances") == 0


BAD_BODIES: list[tuple[str, Any, tuple[int, ...], str]] = [
    (
        "unknown-field",
        {"taskDefinitionId": "greet", "input": {"name": "a"}, "colour": "red"},
        (400,),
        "colour",
    ),
    (
        "priority-number",
        {"taskDefinitionId": "greet", "input": {"name": "a"}, "priority": 5},
        (400, 422),
        "priority",
    ),
    (
        "priority-unknown",
        {"taskDefinitionId": "greet", "input": {"name": "a"}, "priority": "URGENT"},
        (400, 422),
        "priority",
    ),
    ("input-string", {"taskDefinitionId": "greet", "input": "Ada"}, (400, 422), "input"),
    ("missing-definition-id", {"input": {"name": "a"}}, (400,), "taskDefinitionId"),
    ("definition-id-number", {"taskDefinitionId": 7, "input": {"name": "a"}}, (400, 422), "taskDefinitionId"),
    (
        "callback-not-http",
        {"taskDefinitionId": "greet", "input": {"name": "a"}, "callbackUrl": "ftp://x"},
        (400, 422),
        "callbackUrl",
    ),
    ("body-is-list", [1], (400,), "body"),
    (
        "override-above-ceiling",
        {
            "taskDefinitionId": "greet",
            "input": {"name": "a"},
            "executionConfig": {"resourceRequirements": {"memory": "64Gi"}},
        },
        (422,),
        "executionConfig.resourceRequirements.memory",
    ),
]


@pytest.mark.parametrize(
    ("body", "statuses", "field"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_refused_submissions_name_the_field_and_write_nothing(
    client: Any,
    admin: dict[str, str],
    greet: None,
    database: str,
    body: Any,
    statuses: tuple[int, ...],
    field: str,
) -> None:
    r = client.post(TASKS, json=body, headers=admin)
    assert r.status_code in statuses, (r.status_code, r.json)
    assert_envelope(r, r.status_code, "VALIDATION_ERROR", field)
    assert count(database, "task_instances") == 0 and count(database, "outbox") == 0


def test_malformed_json_is_400(client: Any, admin: dict[str, str], greet: None, database: str) -> None:
    for data in ('{"taskDefinitionId": "greet",', "", "null"):
        r = client.post(TASKS, data=data, headers={**admin, "Content-Type": "application/json"})
        assert_envelope(r, 400, "VALIDATION_ERROR", "body")
    assert count(database, "task_instances") == 0


def test_oversized_body_is_413_envelope(
    client: Any, admin: dict[str, str], greet: None, database: str
) -> None:
    big = {"taskDefinitionId": "greet", "input": {"name": "x" * (1024 * 1024 + 10)}}
    r = client.post(TASKS, json=big, headers=admin)
    assert_envelope(r, 413, "VALIDATION_ERROR")
    assert r.mimetype == "application/json"
    assert count(database, "task_instances") == 0


def test_list_filters_and_pagination(client: Any, admin: dict[str, str], greet: None) -> None:
    create_definition(client, admin, APPROVE)
    a = submit(client, admin, workflowInstanceId="wf-a")
    b = submit(client, admin, workflowInstanceId="wf-b")
    m = submit(client, admin, "approve-order", input={})
    client.post(f"{TASKS}/{b}/cancel", json={"reason": "no"}, headers=admin)

    def ids(query: str) -> list[str]:
        r = client.get(f"{TASKS}?{query}", headers=admin)
        assert r.status_code == 200, r.json
        return [t["id"] for t in r.json["items"]]

    assert set(ids("")) == {a, b, m}
    assert ids("status=CANCELLED") == [b]
    assert set(ids("status=PENDING")) == {a, m}
    assert ids("type=MANUAL") == [m]
    assert set(ids("taskDefinitionId=greet")) == {a, b}
    assert ids("workflowInstanceId=wf-a") == [a]
    assert ids("workflowInstanceId=wf-a&status=CANCELLED") == []

    r = client.get(f"{TASKS}?limit=2&page=1", headers=admin)
    assert r.json["pagination"] == {"page": 1, "limit": 2, "totalItems": 3, "totalPages": 2}
    page2 = client.get(f"{TASKS}?limit=2&page=2", headers=admin).json
    assert len(page2["items"]) == 1
    assert {t["id"] for t in r.json["items"] + page2["items"]} == {a, b, m}
    assert client.get(TASKS, headers=admin).json["pagination"]["limit"] == 20


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("limit=101", "limit"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("page=x", "page"),
        ("status=DONE", "status"),
        ("type=ROBOT", "type"),
    ],
)
def test_bad_list_query_is_400(client: Any, admin: dict[str, str], query: str, field: str) -> None:
    assert_envelope(client.get(f"{TASKS}?{query}", headers=admin), 400, "VALIDATION_ERROR", field)


def test_get_unknown_task_is_404(client: Any, admin: dict[str, str]) -> None:
    for path in ("", "/events", "/logs"):
        assert_envelope(
            client.get(f"{TASKS}/00000000-0000-0000-0000-000000000000{path}", headers=admin), 404, "NOT_FOUND"
        )
    assert_envelope(client.get(f"{TASKS}/not-a-uuid", headers=admin), 404, "NOT_FOUND")
    assert_envelope(client.post(f"{TASKS}/not-a-uuid/cancel", headers=admin), 404, "NOT_FOUND")


def test_cancel_then_cancel_again_is_409(
    client: Any, greet: None, admin: dict[str, str], database: str
) -> None:
    sam = auth("sam", "submitter")
    task_id = submit(client, sam)
    r = client.post(f"{TASKS}/{task_id}/cancel", json={"reason": "changed my mind"}, headers=sam)
    assert r.status_code == 200 and r.json == {"id": task_id, "status": "CANCELLED"}
    detail = client.get(f"{TASKS}/{task_id}", headers=sam).json
    assert detail["status"] == "CANCELLED" and detail["error"]["code"] == "CANCELLED"
    assert_envelope(client.post(f"{TASKS}/{task_id}/cancel", json={}, headers=sam), 409, "CONFLICT")
    assert_envelope(
        client.post(f"{TASKS}/{task_id}/cancel", json={"reason": 5}, headers=sam),
        400,
        "VALIDATION_ERROR",
        "reason",
    )
    assert sql(database, "SELECT status FROM task_instances WHERE id = %s", task_id) == [("CANCELLED",)]

    events = client.get(f"{TASKS}/{task_id}/events", headers=sam).json["items"]
    assert [(e["type"], e["toStatus"], e["actor"]) for e in events] == [
        ("task.instance.created", "PENDING", "sam"),
        ("task.instance.cancelled", "CANCELLED", "sam"),
    ]
    assert events[1]["fromStatus"] == "PENDING" and events[1]["details"] == {"reason": "changed my mind"}


def test_retry_only_for_failed_or_timed_out(client: Any, admin: dict[str, str], greet: None) -> None:
    task_id = submit(client, admin)
    assert_envelope(client.post(f"{TASKS}/{task_id}/retry", headers=admin), 409, "CONFLICT")
    client.post(f"{TASKS}/{task_id}/cancel", headers=admin)
    assert_envelope(client.post(f"{TASKS}/{task_id}/retry", headers=admin), 409, "CONFLICT")
    assert client.get(f"{TASKS}/{task_id}", headers=admin).json["status"] == "CANCELLED"


def test_retry_of_failed_task_runs_it_again(
    client: Any, admin: dict[str, str], greet: None, database: str
) -> None:
    task_id = submit(client, admin)
    sql(database, "UPDATE task_instances SET status = 'FAILED', version = version + 1 WHERE id = %s", task_id)
    r = client.post(f"{TASKS}/{task_id}/retry", headers=admin)
    assert r.status_code == 200 and r.json == {"id": task_id, "status": "PENDING"}
    detail = client.get(f"{TASKS}/{task_id}", headers=admin).json
    assert detail["retryCount"] == 1 and detail["status"] == "PENDING"


def test_a_new_definition_version_does_not_change_submitted_tasks(
    client: Any, admin: dict[str, str], greet: None
) -> None:
    task_id = submit(client, admin)
    create_definition(client, admin, definition(name="v2"))
    assert client.get(f"{TASKS}/{task_id}", headers=admin).json["definitionVersion"] == "1.0.0"
    assert client.get(f"{TASKS}/{submit(client, admin)}", headers=admin).json["definitionVersion"] == "1.0.1"
