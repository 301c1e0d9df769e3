"""Router API against a real PostgreSQL and Redis, through Flask's test client."""

from __future__ import annotations

from typing import Any

from tests.conftest import auth

DEF = {
    "id": "greet",
    "name": "Greet",
    "type": "AUTOMATED",
    "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    "executionConfig": {"runtime": "python", "code": "def main(input):\n    return {'hi': input['name']}\n"},
}


def test_definition_submit_and_get(client: Any, admin: dict[str, str]) -> None:
    r = client.post("/api/v1/tasks/definitions", json=DEF, headers=admin)
    assert r.status_code == 201, r.json
    assert r.json["version"] == "1.0.0"
    r = client.post("/api/v1/tasks", json={"taskDefinitionId": "greet", "input": {"name": "x"}}, headers=admin)
    assert r.status_code == 201, r.json
    task_id = r.json["id"]
    r = client.get(f"/api/v1/tasks/{task_id}", headers=admin)
    assert r.status_code == 200
    assert r.json["status"] == "PENDING"
    assert r.json["taskDefinitionId"] == "greet"


def test_input_failing_schema_names_field(client: Any, admin: dict[str, str]) -> None:
    client.post("/api/v1/tasks/definitions", json=DEF, headers=admin)
    r = client.post("/api/v1/tasks", json={"taskDefinitionId": "greet", "input": {"name": 5}}, headers=admin)
    assert r.status_code == 422
    assert r.json["error"]["code"] == "VALIDATION_ERROR"
    assert r.json["error"]["details"][0]["field"] == "input.name"


def test_missing_credentials_is_401_and_wrong_role_is_403(client: Any) -> None:
    assert client.get("/api/v1/tasks").status_code == 401
    r = client.post("/api/v1/tasks/definitions", json=DEF, headers=auth("bob", "submitter"))
    assert r.status_code == 403
    assert r.json["error"]["code"] == "FORBIDDEN"
