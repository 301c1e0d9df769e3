"""POST /api/v1/tasks/batch: one result per item in order, valid items stored even when others are not."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api_helpers import API, assert_envelope, count, create_definition, definition, sql
from tests.conftest import auth

BATCH = f"{API}/tasks/batch"


@pytest.fixture
def greet(client: Any, admin: dict[str, str]) -> None:
    create_definition(client, admin)


def item(name: Any = "Ada", **extra: Any) -> dict[str, Any]:
    return {"taskDefinitionId": "greet", "input": {"name": name}, **extra}


def test_valid_items_are_stored_and_published_whatever_the_others(
    client: Any, admin: dict[str, str], greet: None, database: str
) -> None:
    items = [
        item("Ada", priority="HIGH", workflowInstanceId="wf-1"),
        {"taskDefinitionId": "nope", "input": {}},  # unknown definition: 404
        item(42),  # input fails the inputSchema: 422 naming the field
        {"taskDefinitionId": "greet", "input": {"name": "x"}, "priority": "URGENT"},  # bad enum: 422
        item("nul\x00here"),  # NUL: 400 for this item only
        item("Grace"),
    ]
    # an item that is not even an object is a malformed body: the whole request is refused, nothing stored
    assert_envelope(client.post(BATCH, json={"tasks": [*items, "not an object"]}, headers=admin), 400,
                    "VALIDATION_ERROR", "tasks.6")
    r = client.post(BATCH, json={"tasks": items}, headers=admin)
    assert r.status_code == 200, r.json
    results = r.json["results"]
    assert [x["httpStatus"] for x in results] == [201, 404, 422, 422, 400, 201]
    assert results[1]["error"]["code"] == "NOT_FOUND"
    assert any(d["field"].startswith("input") for d in results[2]["error"]["details"])
    assert any(d["field"] == "priority" for d in results[3]["error"]["details"])
    assert results[4]["error"]["code"] == "VALIDATION_ERROR"
    stored = [results[0], results[5]]
    assert all(x["status"] == "PENDING" and x["id"] and x["createdAt"] and "error" not in x for x in stored)

    rows = sql(database, "SELECT id, input->>'name', priority, correlation_id, enqueued_at IS NOT NULL, created_by "
                         "FROM task_instances ORDER BY created_at")
    assert {r[0]: r[1:] for r in rows} == {stored[0]["id"]: ("Ada", "HIGH", "wf-1", True, "admin"),
                                           stored[1]["id"]: ("Grace", "MEDIUM", None, True, "admin")}
    assert sql(database, "SELECT count(*) FROM task_events WHERE type = 'task.instance.created'") == [(2,)]
    detail = client.get(f"{API}/tasks/{stored[1]['id']}", headers=admin).json
    assert detail["status"] == "PENDING" and detail["definitionVersion"] == "1.0.0"
    assert detail["input"] == {"name": "Grace"}


def test_each_item_has_its_own_idempotency_key(
    client: Any, admin: dict[str, str], greet: None, database: str
) -> None:
    first = client.post(BATCH, json={"tasks": [item("Ada", idempotencyKey="k-1"), item("Bob")]}, headers=admin)
    assert [x["httpStatus"] for x in first.json["results"]] == [201, 201]
    again = client.post(BATCH, json={"tasks": [
        item("Ada", idempotencyKey="k-1"),  # a replay: the same task, 200
        item("Eve", idempotencyKey="k-1"),  # the key again with another body: 422 on the key
        item("Cy", idempotencyKey="k-2"),  # new
        item("Cy", idempotencyKey="k-2"),  # the same key twice in one batch: one task, the second a replay
    ]}, headers=admin)
    results = again.json["results"]
    assert [x["httpStatus"] for x in results] == [200, 422, 201, 200]
    assert results[0]["id"] == first.json["results"][0]["id"]
    assert any(d["field"] == "Idempotency-Key" for d in results[1]["error"]["details"])
    assert results[2]["id"] == results[3]["id"]
    assert count(database, "task_instances") == 3
    # keys are scoped per principal, and shared with the single submit's Idempotency-Key header
    single = client.post(f"{API}/tasks", json=item("Ada"), headers={**admin, "Idempotency-Key": "k-1"})
    assert single.status_code == 200 and single.json["id"] == results[0]["id"]
    other = client.post(BATCH, json={"tasks": [item("Ada", idempotencyKey="k-1")]}, headers=auth("bob", "submitter"))
    assert other.json["results"][0]["httpStatus"] == 201


def test_a_single_submit_sees_a_version_registered_meanwhile(
    client: Any, admin: dict[str, str], greet: None, settings: Any, database: str
) -> None:
    """A router process remembers each definition's latest version; storing a task checks it is still the
    latest, so a version registered through another process is used at once."""
    from api import create_app

    assert client.post(f"{API}/tasks", json=item(), headers=admin).status_code == 201  # remembers version 1
    other = create_app(settings, start_dispatcher=False)  # another router process
    try:
        body = definition(inputSchema={"type": "object", "required": ["name", "city"]})
        assert other.test_client().post(f"{API}/tasks/definitions", json=body, headers=admin).status_code == 201
    finally:
        other.extensions["taskexec"].db.dispose()
    assert_envelope(client.post(f"{API}/tasks", json=item(), headers=admin), 422, "VALIDATION_ERROR", "input")
    r = client.post(f"{API}/tasks", json={**item(), "input": {"name": "Ada", "city": "Paris"}}, headers=admin)
    assert r.status_code == 201
    assert sql(database, "SELECT definition_version FROM task_instances WHERE id = %s", r.json["id"]) == [("1.0.1",)]


def test_the_request_itself_is_checked_as_a_whole(client: Any, admin: dict[str, str], greet: None,
                                                  database: str) -> None:
    assert_envelope(client.post(BATCH, json={"tasks": []}, headers=admin), 422, "VALIDATION_ERROR", "tasks")
    assert_envelope(client.post(BATCH, json={"tasks": [item()] * 1001}, headers=admin), 422, "VALIDATION_ERROR",
                    "tasks")
    assert_envelope(client.post(BATCH, json={"tasks": item()}, headers=admin), 400, "VALIDATION_ERROR", "tasks")
    assert_envelope(client.post(BATCH, json=[item()], headers=admin), 400, "VALIDATION_ERROR", "body")
    assert_envelope(client.post(BATCH, json={"tasks": [item()], "extra": 1}, headers=admin), 400,
                    "VALIDATION_ERROR", "extra")
    assert_envelope(client.post(BATCH, json={"tasks": [item()]}), 401, "UNAUTHORIZED")
    assert_envelope(client.post(BATCH, json={"tasks": [item()]}, headers=auth("olga", "operator")), 403, "FORBIDDEN")
    assert count(database, "task_instances") == 0


def test_a_full_batch_is_stored(client: Any, admin: dict[str, str], greet: None, database: str) -> None:
    r = client.post(BATCH, json={"tasks": [item(f"n{i}") for i in range(1000)]}, headers=admin)
    assert r.status_code == 200
    results = r.json["results"]
    assert len(results) == 1000 and {x["httpStatus"] for x in results} == {201}
    assert sql(database, "SELECT count(*), count(enqueued_at) FROM task_instances") == [(1000, 1000)]
    # in order: item i is the task with input n<i>
    names = dict(sql(database, "SELECT id, input->>'name' FROM task_instances"))
    assert [names[x["id"]] for x in results[:5]] == ["n0", "n1", "n2", "n3", "n4"]
