"""Hostile and odd requests: always a JSON error envelope (never a 500); a refused submit writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api_helpers import API, assert_envelope, count, create_definition, submit

NUL = "\u0000"


@pytest.fixture
def greet(client: Any, admin: dict[str, str]) -> None:
    create_definition(client, admin)


def no_500(r: Any) -> Any:
    assert r.status_code < 500, (r.status_code, r.get_data(as_text=True)[:300])
    if r.status_code >= 400:
        assert r.is_json and set(r.json) == {"error"}, r.get_data(as_text=True)[:300]
    return r


@pytest.mark.parametrize(
    "body",
    [
        {"taskDefinitionId": "greet", "input": {"name": f"a{NUL}b"}},
        {"taskDefinitionId": f"gr{NUL}eet", "input": {"name": "a"}},
        {"taskDefinitionId": "greet", "input": {"name": "a"}, "workflowInstanceId": f"wf{NUL}"},
        {"taskDefinitionId": "greet", "input": {"name": "a", "extra": {f"k{NUL}": 1}}},
        {"taskDefinitionId": "greet", "input": {"name": "a"}, "priority": None},
        {"taskDefinitionId": "", "input": {}},
        {"taskDefinitionId": "x" * 500, "input": {}},
    ],
    ids=[
        "nul-in-input",
        "nul-in-definition-id",
        "nul-in-workflow-id",
        "nul-in-key",
        "priority-null",
        "empty-definition-id",
        "long-definition-id",
    ],
)
def test_odd_submissions_are_refused_cleanly(
    client: Any, admin: dict[str, str], greet: None, database: str, body: dict[str, Any]
) -> None:
    r = no_500(client.post(f"{API}/tasks", json=body, headers=admin))
    assert r.status_code in (400, 404, 422)
    assert count(database, "task_instances") == 0


def test_deeply_nested_json_is_not_a_500(
    client: Any, admin: dict[str, str], greet: None, database: str
) -> None:
    deep = '{"taskDefinitionId": "greet", "input": {"name": "a", "x": ' + "[" * 5000 + "]" * 5000 + "}}"
    r = no_500(client.post(f"{API}/tasks", data=deep, headers={**admin, "Content-Type": "application/json"}))
    assert r.status_code in (201, 400, 422)


@pytest.mark.parametrize(
    "path",
    [
        f"/tasks?taskDefinitionId=a{NUL}",
        f"/tasks?workflowInstanceId={NUL}",
        f"/tasks/definitions?search=%{NUL}",
        f"/tasks/abc{NUL}def",
        f"/tasks/definitions/x{NUL}y",
        "/tasks?page=99999999999",
        "/tasks?limit=1e2",
        "/tasks?unknown=1",
        "/tasks/definitions?search=%25_%25",
        f"/tasks/{'a' * 5000}",
    ],
)
def test_odd_reads_are_not_500(client: Any, admin: dict[str, str], path: str) -> None:
    no_500(client.get(API + path.replace(NUL, "%00"), headers=admin))


def test_body_that_is_not_json_content_type(
    client: Any, admin: dict[str, str], greet: None, database: str
) -> None:
    r = client.post(
        f"{API}/tasks", data="taskDefinitionId=greet", headers={**admin, "Content-Type": "text/plain"}
    )
    assert_envelope(r, 400, "VALIDATION_ERROR", "body")
    r = client.post(
        f"{API}/tasks", data=b"\xff\xfe\x00garbage", headers={**admin, "Content-Type": "application/json"}
    )
    assert_envelope(r, 400, "VALIDATION_ERROR", "body")
    assert count(database, "task_instances") == 0


def test_cancel_body_must_be_valid(client: Any, admin: dict[str, str], greet: None) -> None:
    task_id = submit(client, admin)
    no_500(
        client.post(
            f"{API}/tasks/{task_id}/cancel", data="{", headers={**admin, "Content-Type": "application/json"}
        )
    )
    assert_envelope(
        client.post(f"{API}/tasks/{task_id}/cancel", json={"force": "yes please"}, headers=admin),
        400,
        "VALIDATION_ERROR",
        "force",
    )
    assert client.get(f"{API}/tasks/{task_id}", headers=admin).json["status"] == "PENDING"


def test_envelope_codes_per_status(client: Any, admin: dict[str, str], greet: None) -> None:
    task_id = submit(client, admin)
    assert_envelope(client.get(f"{API}/tasks/{task_id}"), 401, "UNAUTHORIZED")
    assert_envelope(
        client.post(f"{API}/tasks/definitions", json={}, headers={"Authorization": "Bearer x"}),
        401,
        "UNAUTHORIZED",
    )
    client.post(f"{API}/tasks/{task_id}/cancel", headers=admin)
    err = assert_envelope(client.post(f"{API}/tasks/{task_id}/cancel", headers=admin), 409, "CONFLICT")
    assert err["details"] == {"status": "CANCELLED"}


def test_nul_is_refused_naming_the_field(client: Any, admin: dict[str, str], greet: None) -> None:
    r = client.post(
        f"{API}/tasks",
        json={"taskDefinitionId": "greet", "input": {"name": "ok", "tags": ["a", f"b{NUL}"]}},
        headers=admin,
    )
    assert_envelope(r, 400, "VALIDATION_ERROR", "input.tags[1]")
    assert_envelope(
        client.get(f"{API}/tasks?workflowInstanceId=a%00", headers=admin),
        400,
        "VALIDATION_ERROR",
        "workflowInstanceId",
    )
