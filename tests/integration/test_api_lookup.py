"""What the client, the CLI and the dashboard need from the API: apply (register only what changed), the task
list's time window / correlation id / id search, `GET /api/v1/me`, and `format` checks on submit and complete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.api_helpers import API, GREET, assert_envelope, create_definition, definition, sql, submit
from tests.conftest import auth
from tests.manual_support import manual_def

DEFS = f"{API}/tasks/definitions"


def test_apply_registers_only_what_changed(client: Any, admin: dict[str, str], database: str) -> None:
    first = client.put(f"{DEFS}/greet", json=GREET, headers=admin)
    assert first.status_code == 201 and first.json["version"] == "1.0.0"
    again = client.put(f"{DEFS}/greet", json=GREET, headers=admin)  # same content: nothing new
    assert again.status_code == 200 and again.json["version"] == "1.0.0"
    # defaults a registration fills in (retryPolicy, executionConfig) do not count as a change
    with_defaults = definition(retryPolicy={"maxRetries": 3}, executionConfig={**GREET["executionConfig"],
                                                                               "environmentVariables": None})
    assert client.put(f"{DEFS}/greet", json=with_defaults, headers=admin).status_code == 201  # retryPolicy is new
    assert client.put(f"{DEFS}/greet", json=definition(retryPolicy={"maxRetries": 3, "retryInterval": 1000}),
                      headers=admin).json["version"] == "1.0.1"
    changed = client.put(f"{DEFS}/greet", json=definition(name="Greet v3", retryPolicy={"maxRetries": 3}),
                         headers=admin)
    assert changed.status_code == 201 and changed.json["version"] == "1.0.2"
    assert sql(database, "SELECT count(*) FROM task_definitions WHERE id = 'greet'")[0][0] == 3
    assert_envelope(client.put(f"{DEFS}/other", json=GREET, headers=admin), 422, "VALIDATION_ERROR", "id")
    assert_envelope(client.put(f"{DEFS}/greet", json=GREET, headers=auth("sam", "submitter")), 403, "FORBIDDEN")


def test_task_list_time_window_correlation_and_search(client: Any, admin: dict[str, str], database: str) -> None:
    create_definition(client, admin)
    a = submit(client, admin, correlation_id="order-17")
    b = submit(client, admin, input={"name": "Bob"})
    old = submit(client, admin, input={"name": "Old"})
    sql(database, "UPDATE task_instances SET created_at = now() - interval '3 days' WHERE id = %s", old)

    def ids(**query: str) -> list[str]:
        r = client.get(f"{API}/tasks", query_string=query, headers=admin)
        assert r.status_code == 200, r.json
        return [t["id"] for t in r.json["items"]]

    assert set(ids()) == {a, b, old}
    day_ago = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert set(ids(createdAfter=day_ago)) == {a, b}
    assert ids(createdBefore=day_ago) == [old]
    assert ids(correlationId="order-17") == [a]
    assert ids(search="order-17") == [a]
    assert ids(search=b) == [b]
    assert ids(search=b[:8].upper()) == [b]
    assert ids(search="%") == [] and ids(search="____") == []  # never a LIKE wildcard
    assert_envelope(client.get(f"{API}/tasks?createdAfter=yesterday", headers=admin), 400, "VALIDATION_ERROR",
                    "createdAfter")
    assert_envelope(client.get(f"{API}/tasks?createdAfter=2024-05-01T00:00:00", headers=admin), 400,
                    "VALIDATION_ERROR", "createdAfter")  # no offset: ambiguous


def test_me_lists_the_callers_permissions(client: Any) -> None:
    me = client.get(f"{API}/me", headers=auth("olga", "monitor")).json
    assert me["sub"] == "olga" and me["kind"] == "jwt" and me["roles"] == ["monitor"]
    assert "tasks:monitor" in me["permissions"] and "tasks:cancel" not in me["permissions"]
    assert "admin" in client.get(f"{API}/me", headers=auth("root", "admin")).json["permissions"]
    assert_envelope(client.get(f"{API}/me"), 401, "UNAUTHORIZED")


def test_formats_are_enforced_on_submit_and_complete(client: Any, admin: dict[str, str], database: str) -> None:
    schema = {"type": "object", "properties": {"email": {"type": "string", "format": "email"},
                                               "at": {"type": "string", "format": "date-time"}}}
    create_definition(client, admin, definition(id="mail", inputSchema=schema))
    r = client.post(f"{API}/tasks", json={"taskDefinitionId": "mail", "input": {"email": "nobody", "at": "noon"}},
                    headers=admin)
    err = assert_envelope(r, 422, "VALIDATION_ERROR")
    assert {d["field"]: d["message"] for d in err["details"]} == {
        "input.email": "must be an email address",
        "input.at": "must be a date and time with a UTC offset (RFC 3339, e.g. 2024-05-01T09:30:00Z)"}
    submit(client, admin, "mail", {"email": "a@example.com", "at": "2024-05-01T09:30:00Z"})

    form = {"type": "object", "required": ["contact"], "properties": {
        "contact": {"type": "string", "format": "email"}}}
    create_definition(client, admin, manual_def("form-check", formSchema=form))
    task_id = submit(client, admin, "form-check", {})
    token = sql(database, "SELECT dispatch_token FROM task_instances WHERE id = %s", task_id)[0][0]
    r = client.post(f"/internal/v1/tasks/{task_id}/assign", json={"dispatchToken": token, "workerId": "w1"},
                    headers=admin)  # the MANUAL pool's step, called directly
    assert r.status_code == 200 and r.json["status"] == "ASSIGNED", r.json
    output = {"approved": True, "score": 4, "contact": "not-an-address"}  # fine for outputSchema, not for the form
    err = assert_envelope(client.post(f"{API}/tasks/{task_id}/complete", json={"output": output}, headers=admin),
                          422, "VALIDATION_ERROR")
    assert err["details"] == [{"field": "output.contact", "message": "must be an email address"}]
    assert sql(database, "SELECT status FROM task_instances WHERE id = %s", task_id)[0][0] == "ASSIGNED"
    done = client.post(f"{API}/tasks/{task_id}/complete", json={"output": {**output, "contact": "ops@example.com"}},
                       headers=admin)
    assert done.status_code == 200 and done.json["status"] == "COMPLETED", done.json
