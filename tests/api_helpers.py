"""Helpers for the router API tests: sample definitions, submit shortcuts, direct database reads."""

from __future__ import annotations

import copy
from typing import Any

import psycopg

from tests import support

API = "/api/v1"

GREET: dict[str, Any] = {
    "id": "greet",
    "name": "Greet someone",
    "type": "AUTOMATED",
    "inputSchema": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "times": {"type": "integer", "minimum": 1}},
        "required": ["name"],
    },
    "outputSchema": {"type": "object", "properties": {"hi": {"type": "string"}}, "required": ["hi"]},
    "executionConfig": {"runtime": "python", "code": "def main(input):\n    return {'hi': input['name']}\n"},
}

APPROVE: dict[str, Any] = {
    "id": "approve-order",
    "name": "Approve an order",
    "type": "MANUAL",
    "inputSchema": {"type": "object"},
    "executionConfig": {"assignment": {"role": "operator"}},
}


def definition(**overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(GREET)
    body.update(overrides)
    return body


def create_definition(
    client: Any, headers: dict[str, str], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    r = client.post(f"{API}/tasks/definitions", json=body or GREET, headers=headers)
    assert r.status_code == 201, r.json
    return r.json  # type: ignore[no-any-return]


def submit(
    client: Any, headers: dict[str, str], def_id: str = "greet", input: Any = None, **extra: Any
) -> str:
    body = {"taskDefinitionId": def_id, "input": {"name": "Ada"} if input is None else input, **extra}
    r = client.post(f"{API}/tasks", json=body, headers=headers)
    assert r.status_code == 201, r.json
    return r.json["id"]  # type: ignore[no-any-return]


def sql(database: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read (or write) the test database directly, bypassing our code."""
    with psycopg.connect(support.db_url(database).replace("+psycopg", ""), autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def count(database: str, table: str) -> int:
    return int(sql(database, f"SELECT count(*) FROM {table}")[0][0])


def assert_envelope(r: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The response is the JSON error envelope with this status and code (and names `field`, if given)."""
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True)[:500])
    assert r.is_json, r.get_data(as_text=True)[:200]
    err = r.json["error"]
    assert err["code"] == code and isinstance(err["message"], str) and err["message"]
    if field is not None:
        fields = [d.get("field") for d in err.get("details") or [] if isinstance(d, dict)]
        assert any(f == field or (f or "").startswith(field) for f in fields), (field, err)
    return err  # type: ignore[no-any-return]
