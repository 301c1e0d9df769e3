"""Task definitions through the router: versions, listing, and every way a definition is refused."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api_helpers import API, APPROVE, assert_envelope, count, create_definition, definition
from tests.conftest import auth

DEFS = f"{API}/tasks/definitions"


def test_versions_increment_and_are_addressable(client: Any, admin: dict[str, str]) -> None:
    v1 = create_definition(client, admin)
    assert v1["version"] == "1.0.0" and v1["id"] == "greet" and v1["type"] == "AUTOMATED"
    assert v1["executionConfig"]["runtime"] == "python" and "createdAt" in v1
    v2 = create_definition(client, admin, definition(name="Greet v2"))
    assert v2["version"] == "1.0.1"  # omitted: the next patch after the latest
    latest = client.get(f"{DEFS}/greet", headers=admin)
    assert latest.status_code == 200 and latest.json["version"] == "1.0.1" and latest.json["name"] == "Greet v2"
    old = client.get(f"{DEFS}/greet?version=1.0.0", headers=admin)
    assert old.status_code == 200 and old.json["version"] == "1.0.0" and old.json["name"] == "Greet someone"


def test_explicit_semantic_versions_order_numerically(client: Any, admin: dict[str, str], database: str) -> None:
    """As in the design ("1.2.0"); 1.10.0 comes after 1.9.0, in the API and in SQL (the list's latest)."""
    for version in ("1.9.0", "1.10.0", "1.2.0"):
        assert create_definition(client, admin, definition(version=version, name=f"v{version}"))["version"] == version
    taken = client.post(DEFS, json=definition(version="1.10.0"), headers=admin)
    assert_envelope(taken, 409, "CONFLICT")
    assert taken.json["error"]["details"] == {"field": "version"} and "1.10.0" in taken.json["error"]["message"]
    assert client.get(f"{DEFS}/greet", headers=admin).json["version"] == "1.10.0"
    listed = {d["id"]: d for d in client.get(DEFS, headers=admin).json["items"]}
    assert listed["greet"]["version"] == "1.10.0" and listed["greet"]["name"] == "v1.10.0"
    assert create_definition(client, admin)["version"] == "1.10.1"
    assert create_definition(client, admin, definition(version="2.0.0"))["version"] == "2.0.0"
    assert client.get(f"{DEFS}/greet?version=1.9.0", headers=admin).json["name"] == "v1.9.0"
    assert count(database, "task_definitions") == 5


def test_get_unknown_is_404(client: Any, admin: dict[str, str]) -> None:
    assert_envelope(client.get(f"{DEFS}/nope", headers=admin), 404, "NOT_FOUND")
    create_definition(client, admin)
    assert_envelope(client.get(f"{DEFS}/greet?version=9.0.0", headers=admin), 404, "NOT_FOUND")
    for bad in ("abc", "0", "1", "1.0", "01.0.0", "1.0.0-beta.1", "1.0.0.0"):
        assert_envelope(client.get(f"{DEFS}/greet?version={bad}", headers=admin), 400, "VALIDATION_ERROR", "version")


def test_list_filters_and_pagination(client: Any, admin: dict[str, str]) -> None:
    for i in range(3):
        create_definition(client, admin, definition(id=f"calc-{i}", name=f"Calculator {i}"))
    create_definition(client, admin, definition(id="calc-0", name="Calculator 0 v2"))
    create_definition(client, admin, APPROVE)

    r = client.get(DEFS, headers=admin)
    assert r.status_code == 200
    assert r.json["pagination"] == {"page": 1, "limit": 20, "totalItems": 4, "totalPages": 1}
    by_id = {d["id"]: d for d in r.json["items"]}
    assert set(by_id) == {"calc-0", "calc-1", "calc-2", "approve-order"}
    assert by_id["calc-0"]["version"] == "1.0.1"  # latest version only

    r = client.get(f"{DEFS}?type=MANUAL", headers=admin)
    assert [d["id"] for d in r.json["items"]] == ["approve-order"]
    r = client.get(f"{DEFS}?search=CALCULATOR", headers=admin)
    assert r.json["pagination"]["totalItems"] == 3
    r = client.get(f"{DEFS}?search=approve", headers=admin)
    assert [d["id"] for d in r.json["items"]] == ["approve-order"]

    r = client.get(f"{DEFS}?page=2&limit=3", headers=admin)
    assert r.json["pagination"] == {"page": 2, "limit": 3, "totalItems": 4, "totalPages": 2}
    assert len(r.json["items"]) == 1
    r = client.get(f"{DEFS}?page=5&limit=3", headers=admin)
    assert r.status_code == 200 and r.json["items"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [("page=0", "page"), ("limit=101", "limit"), ("limit=abc", "limit"), ("type=ROBOT", "type")],
)
def test_list_bad_query_is_400(client: Any, admin: dict[str, str], query: str, field: str) -> None:
    assert_envelope(client.get(f"{DEFS}?{query}", headers=admin), 400, "VALIDATION_ERROR", field)


def test_submitter_reads_but_cannot_write(client: Any) -> None:
    dev = auth("dora", "developer")
    create_definition(client, dev)
    sub = auth("sam", "submitter")
    assert client.get(DEFS, headers=sub).status_code == 200
    assert client.get(f"{DEFS}/greet", headers=sub).status_code == 200
    assert_envelope(client.post(DEFS, json=definition(), headers=sub), 403, "FORBIDDEN")


BAD: list[tuple[str, dict[str, Any], tuple[int, ...], str]] = [
    ("invalid-input-schema", {"inputSchema": {"type": "bogus"}}, (422,), "inputSchema"),
    ("invalid-output-schema", {"outputSchema": {"properties": 5}}, (422,), "outputSchema"),
    (
        "unknown-runtime",
        {"executionConfig": {"runtime": "cobol", "code": "x"}},
        (400, 422),
        "executionConfig.runtime",
    ),
    ("no-code", {"executionConfig": {"runtime": "python"}}, (400, 422), "executionConfig.code"),
    (
        "memory-above-ceiling",
        {"executionConfig": {"runtime": "python", "code": "x", "resourceRequirements": {"memory": "3Gi"}}},
        (422,),
        "executionConfig.resourceRequirements.memory",
    ),
    (
        "cpu-above-ceiling",
        {"executionConfig": {"runtime": "python", "code": "x", "resourceRequirements": {"cpu": "2500m"}}},
        (422,),
        "executionConfig.resourceRequirements.cpu",
    ),
    (
        "timeout-seconds-above-ceiling",
        {
            "executionConfig": {
                "runtime": "python",
                "code": "x",
                "resourceRequirements": {"timeoutSeconds": 3601},
            }
        },
        (422,),
        "executionConfig.resourceRequirements.timeoutSeconds",
    ),
    (
        "bad-memory-quantity",
        {"executionConfig": {"runtime": "python", "code": "x", "resourceRequirements": {"memory": "lots"}}},
        (400, 422),
        "executionConfig.resourceRequirements.memory",
    ),
    (
        "network-not-allowed",
        {"executionConfig": {"runtime": "python", "code": "x", "network": {"outboundAccess": True}}},
        (422,),
        "executionConfig.network.outboundAccess",
    ),
    ("timeout-ms-above-ceiling", {"timeout": 3_600_001}, (422,), "timeout"),
    ("uppercase-slug", {"id": "Greet"}, (400, 422), "id"),
    ("slug-with-slash", {"id": "a/b"}, (400, 422), "id"),
    ("slug-with-space", {"id": "has space"}, (400, 422), "id"),
    ("unknown-type", {"type": "ROBOT"}, (400, 422), "type"),
    ("unknown-field", {"colour": "red"}, (400,), "colour"),
    ("version-integer", {"version": 2}, (400, 422), "version"),
    ("version-not-semantic", {"version": "1.2"}, (400, 422), "version"),
    ("version-pre-release", {"version": "1.2.0-rc.1"}, (400, 422), "version"),
    (
        "manual-without-assignee",
        {"type": "MANUAL", "executionConfig": {"assignment": {}}},
        (400, 422),
        "executionConfig.assignment",
    ),
]


@pytest.mark.parametrize(("overrides", "statuses", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_refused_definitions_name_the_field_and_write_nothing(
    client: Any,
    admin: dict[str, str],
    database: str,
    overrides: dict[str, Any],
    statuses: tuple[int, ...],
    field: str,
) -> None:
    r = client.post(DEFS, json=definition(**overrides), headers=admin)
    assert r.status_code in statuses, (r.status_code, r.json)
    assert_envelope(r, r.status_code, "VALIDATION_ERROR", field)
    assert count(database, "task_definitions") == 0


def test_ceilings_are_inclusive_and_follow_settings(client: Any, admin: dict[str, str]) -> None:
    at_limit = {
        "runtime": "shell",
        "code": "echo hi",
        "resourceRequirements": {"memory": "2Gi", "cpu": "2", "timeoutSeconds": 3600},
    }
    d = create_definition(client, admin, definition(executionConfig=at_limit, timeout=3_600_000))
    assert d["executionConfig"]["resourceRequirements"]["memory"] == "2Gi"


def test_malformed_json_and_empty_body(client: Any, admin: dict[str, str]) -> None:
    r = client.post(DEFS, data="{not json", headers={**admin, "Content-Type": "application/json"})
    assert_envelope(r, 400, "VALIDATION_ERROR", "body")
    assert_envelope(client.post(DEFS, headers=admin), 400, "VALIDATION_ERROR", "body")
    assert_envelope(client.post(DEFS, json=[1, 2], headers=admin), 400, "VALIDATION_ERROR", "body")
