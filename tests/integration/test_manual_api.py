"""Manual tasks through Flask's test client against a real PostgreSQL: claim, complete, reassign, inbox.

No worker process here: the MANUAL pool's step (`POST /internal/v1/tasks/<id>/assign`) is called
directly with the task's dispatch token. Notifications and orchestrator events are checked as the
outbox rows the router's dispatcher would deliver (see tests/e2e/test_manual_flow.py for real delivery).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from taskexec.store.models import OutboxMessage, TaskInstance
from tests.conftest import auth
from tests.manual_support import GOOD_OUTPUT, manual_def, operator

ADMIN = auth("admin", "admin")


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[Any]:
    from api import create_app
    from taskexec.core.config import Settings

    keys = ("TEL_", "DATABASE_URL", "CELERY_", "LOG_")
    settings = Settings(**{k: v for k, v in env.items() if k.startswith(keys)},
                        NOTIFICATION_SERVICE_URL="http://notify.test", WORKFLOW_ORCHESTRATOR_URL="http://orch.test",
                        TEL_MANUAL_MAX_OPEN_TASKS="2")
    app = create_app(settings, start_dispatcher=False)
    yield app
    app.extensions["taskexec"].db.dispose()


def define(client: Any, body: dict[str, Any]) -> None:
    r = client.post("/api/v1/tasks/definitions", json=body, headers=ADMIN)
    assert r.status_code == 201, r.json


def submit_assigned(client: Any, app: Any, def_id: str = "review", **body: Any) -> str:
    r = client.post("/api/v1/tasks", json={"taskDefinitionId": def_id, "input": {"doc": "d1"}, **body},
                    headers=ADMIN)
    assert r.status_code == 201, r.json
    task_id = r.json["id"]
    assign(client, app, task_id)
    return task_id  # type: ignore[no-any-return]


def assign(client: Any, app: Any, task_id: str) -> dict[str, Any]:
    with app.extensions["taskexec"].db.session() as s:
        token = s.get(TaskInstance, task_id).dispatch_token
    r = client.post(f"/internal/v1/tasks/{task_id}/assign", json={"dispatchToken": token, "workerId": "w1"},
                    headers=ADMIN)
    assert r.status_code == 200, r.json
    return r.json  # type: ignore[no-any-return]


def outbox(app: Any, task_id: str, target: str) -> list[dict[str, Any]]:
    with app.extensions["taskexec"].db.session() as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.task_id == task_id,
                                                     OutboxMessage.target == target).order_by(OutboxMessage.id))
        return [json.loads(r.body) for r in rows]


def events(client: Any, task_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/tasks/{task_id}/events", headers=ADMIN)
    assert r.status_code == 200
    return r.json["items"]  # type: ignore[no-any-return]


def inbox_ids(client: Any, headers: dict[str, str]) -> list[str]:
    r = client.get("/api/v1/inbox", headers=headers)
    assert r.status_code == 200, r.json
    return [t["id"] for t in r.json["items"]]


def test_role_task_in_both_inboxes_claim_then_409(client: Any, app: Any) -> None:
    define(client, manual_def())
    task_id = submit_assigned(client, app)
    alice, bob = operator("alice", "reviewers"), operator("bob", "reviewers")
    assert inbox_ids(client, alice) == [task_id] and inbox_ids(client, bob) == [task_id]
    assert inbox_ids(client, operator("carol", "other")) == []
    r = client.post(f"/api/v1/tasks/{task_id}/claim", headers=alice)
    assert r.status_code == 200 and r.json["assignee"] == "alice"
    r = client.post(f"/api/v1/tasks/{task_id}/claim", headers=bob)
    assert r.status_code == 409 and r.json["error"]["code"] == "CONFLICT"
    assert inbox_ids(client, bob) == []
    item = client.get("/api/v1/inbox", headers=alice).json["items"][0]
    assert item["claimed"] is True and item["taskName"] == "Review (review)"
    types = [e["type"] for e in events(client, task_id)]
    assert "task.claimed" in types and "task.claim_rejected" in types
    claimed = next(e for e in events(client, task_id) if e["type"] == "task.claimed")
    assert claimed["actor"] == "alice" and claimed["userAgent"] == "pytest-alice" and claimed["ip"]
    notes = outbox(app, task_id, "notification")
    assert notes[0] == {"type": "ASSIGNMENT", "recipients": ["role:reviewers"], "taskId": task_id,
                        "taskName": "Review (review)", "priority": "MEDIUM", "dueDate": notes[0]["dueDate"]}
    assert [e["type"] for e in outbox(app, task_id, "orchestrator")][:2] == [
        "task.instance.created", "task.manual.assigned"]


def test_complete_validates_output_and_records_attempts(client: Any, app: Any) -> None:
    define(client, manual_def())
    task_id = submit_assigned(client, app)
    alice, bob = operator("alice", "reviewers"), operator("bob", "reviewers")
    assert client.post(f"/api/v1/tasks/{task_id}/claim", headers=alice).status_code == 200
    r = client.post(f"/api/v1/tasks/{task_id}/complete", json={"output": {"score": 9, "decision": "maybe"}},
                    headers=alice)
    assert r.status_code == 422, r.json
    fields = {d["field"] for d in r.json["error"]["details"]}
    assert fields == {"output.approved", "output.score", "output.decision"}
    assert client.get(f"/api/v1/tasks/{task_id}", headers=ADMIN).json["status"] == "ASSIGNED"
    r = client.post(f"/api/v1/tasks/{task_id}/complete", json={"output": GOOD_OUTPUT}, headers=bob)
    assert r.status_code == 403 and r.json["error"]["code"] == "FORBIDDEN"
    r = client.post(f"/api/v1/tasks/{task_id}/complete", json={"nope": 1}, headers=alice)
    assert r.status_code == 400
    r = client.post(f"/api/v1/tasks/{task_id}/complete", json={"output": GOOD_OUTPUT}, headers=alice)
    assert r.status_code == 200 and r.json == {"id": task_id, "status": "COMPLETED", "completedBy": "alice"}
    task = client.get(f"/api/v1/tasks/{task_id}", headers=ADMIN).json
    assert task["status"] == "COMPLETED" and task["output"] == GOOD_OUTPUT
    r = client.post(f"/api/v1/tasks/{task_id}/complete", json={"output": GOOD_OUTPUT}, headers=alice)
    assert r.status_code == 409
    evts = events(client, task_id)
    rejected = [e for e in evts if e["type"] == "task.completion_rejected"]
    assert [e["details"]["status"] for e in rejected] == [422, 403, 400, 409]
    assert rejected[0]["actor"] == "alice" and rejected[0]["userAgent"] == "pytest-alice"
    assert rejected[0]["details"]["errors"][0]["field"].startswith("output.")
    done = next(e for e in evts if e["type"] == "task.instance.completed")
    assert done["actor"] == "alice" and done["toStatus"] == "COMPLETED" and done["ip"]
    assert outbox(app, task_id, "orchestrator")[-1]["type"] == "task.instance.completed"
    assert outbox(app, task_id, "orchestrator")[-1]["data"]["output"] == GOOD_OUTPUT
    assert [n["type"] for n in outbox(app, task_id, "notification")] == ["ASSIGNMENT", "COMPLETION"]


def test_role_member_may_complete_unclaimed_task_directly(client: Any, app: Any) -> None:
    define(client, manual_def())
    task_id = submit_assigned(client, app)
    r = client.post(f"/api/v1/tasks/{task_id}/complete", json={"output": GOOD_OUTPUT},
                    headers=operator("bob", "reviewers"))
    assert r.status_code == 200
    assert client.get(f"/api/v1/tasks/{task_id}", headers=ADMIN).json["assignee"] == "bob"


def test_reassign_with_reason(client: Any, app: Any) -> None:
    define(client, manual_def(assignment={"user": "${input.owner}"}))
    r = client.post("/api/v1/tasks", json={"taskDefinitionId": "review", "input": {"owner": "alice"}},
                    headers=ADMIN)
    task_id = r.json["id"]
    assign(client, app, task_id)
    assert client.get(f"/api/v1/tasks/{task_id}", headers=ADMIN).json["assignee"] == "alice"
    r = client.post(f"/api/v1/tasks/{task_id}/reassign", json={"newAssignee": "carol", "reason": "vacation"},
                    headers=operator("alice"))
    assert r.status_code == 403
    r = client.post(f"/api/v1/tasks/{task_id}/reassign", json={"newAssignee": "carol", "reason": "vacation"},
                    headers={**ADMIN, "User-Agent": "admin-ui"})
    assert r.status_code == 200 and r.json["assignee"] == "carol"
    evt = next(e for e in events(client, task_id) if e["type"] == "task.reassigned")
    assert evt["details"] == {"from": "alice", "to": "carol", "reason": "vacation"}
    assert evt["actor"] == "admin" and evt["userAgent"] == "admin-ui"
    notes = outbox(app, task_id, "notification")
    assert [(n["type"], n["recipients"]) for n in notes] == [
        ("ASSIGNMENT", ["alice"]), ("REASSIGNMENT", ["carol"]), ("REASSIGNMENT", ["alice"])]
    assert inbox_ids(client, operator("carol")) == [task_id] and inbox_ids(client, operator("alice")) == []
    # the former assignee can no longer complete it; carol can
    r = client.post(f"/api/v1/tasks/{task_id}/complete", json={"output": GOOD_OUTPUT}, headers=operator("alice"))
    assert r.status_code == 404
    r = client.post(f"/api/v1/tasks/{task_id}/complete", json={"output": GOOD_OUTPUT}, headers=operator("carol"))
    assert r.status_code == 200


def test_bad_input_is_a_clear_4xx_and_changes_nothing(client: Any, app: Any) -> None:
    define(client, manual_def(assignment={"user": "bob"}))
    task_id = submit_assigned(client, app)
    before = client.get(f"/api/v1/tasks/{task_id}", headers=ADMIN).json
    # reassigning to nobody
    for body in ({"newAssignee": "", "reason": "x"}, {"newAssignee": "   "}, {"reason": "x"}):
        r = client.post(f"/api/v1/tasks/{task_id}/reassign", json=body, headers=ADMIN)
        assert r.status_code == 400 and r.json["error"]["code"] == "VALIDATION_ERROR", (body, r.json)
    # claiming a task assigned to a specific other person
    r = client.post(f"/api/v1/tasks/{task_id}/claim", headers=operator("alice", "submitter"))
    assert r.status_code == 403 and r.json["error"]["code"] == "FORBIDDEN"
    r = client.post(f"/api/v1/tasks/{task_id}/claim", headers=operator("alice"))
    assert r.status_code == 404  # an operator does not even learn that someone else's task exists
    # completing someone else's task
    r = client.post(f"/api/v1/tasks/{task_id}/complete", json={"output": GOOD_OUTPUT},
                    headers=operator("alice", "submitter"))
    assert r.status_code == 403
    after = client.get(f"/api/v1/tasks/{task_id}", headers=ADMIN).json
    assert (after["status"], after["assignee"], after["version"]) == (before["status"], "bob", before["version"])
    # completing a task that is not MANUAL
    client.post("/api/v1/tasks/definitions", json={"id": "auto", "name": "auto", "type": "AUTOMATED",
                                                   "executionConfig": {"runtime": "python", "code": "x=1"}},
                headers=ADMIN)
    auto_id = client.post("/api/v1/tasks", json={"taskDefinitionId": "auto", "input": {}}, headers=ADMIN).json["id"]
    r = client.post(f"/api/v1/tasks/{auto_id}/complete", json={"output": {}}, headers=ADMIN)
    assert r.status_code == 409 and "not MANUAL" in r.json["error"]["message"]
    assert client.get(f"/api/v1/tasks/{auto_id}", headers=ADMIN).json["status"] == "PENDING"
    # completing or claiming a task that is not open
    client.post(f"/api/v1/tasks/{task_id}/cancel", json={"reason": "x"}, headers=ADMIN)
    assert client.post(f"/api/v1/tasks/{task_id}/complete", json={"output": GOOD_OUTPUT},
                       headers=operator("bob")).status_code == 409
    assert client.post(f"/api/v1/tasks/{task_id}/claim", headers=operator("bob")).status_code == 409
    assert client.post("/api/v1/tasks/nope/claim", headers=ADMIN).status_code == 404


@pytest.mark.parametrize("config,field", [
    ({"assignment": {}}, "executionConfig.assignment"),
    ({"assignment": {"candidateRoles": []}}, "executionConfig.assignment"),
    ({"assignment": {"user": "  "}}, "executionConfig.assignment"),
    ({"assignment": {"role": "r", "strategy": "LOAD_BALANCED"}}, "executionConfig.assignment"),
    ({"assignment": {"role": "r"}, "reminderThresholds": [0.5, 1.5]}, "executionConfig.reminderThresholds"),
    ({"assignment": {"role": "r"}, "escalation": {"action": "REASSIGN"}}, "executionConfig.escalation"),
    ({"assignment": {"role": "r"}, "escalation": {"action": "PANIC"}}, "executionConfig.escalation"),
    ({"assignment": {"role": "r"}, "escalation": {"action": "AUTO_COMPLETE", "output": {"score": 3}}},
     "executionConfig.escalation.output.approved"),  # a missing required property is named at its own path
])
def test_bad_manual_definitions_are_422(client: Any, config: dict[str, Any], field: str) -> None:
    body = {**manual_def(), "executionConfig": config}
    r = client.post("/api/v1/tasks/definitions", json=body, headers=ADMIN)
    assert r.status_code == 422, r.json
    assert r.json["error"]["code"] == "VALIDATION_ERROR"
    assert any(d["field"] == field for d in r.json["error"]["details"]), r.json


def test_inbox_orders_by_priority_then_due_date_and_pages(client: Any, app: Any) -> None:
    define(client, manual_def("slow", deadlineSeconds=3600))
    define(client, manual_def("fast", deadlineSeconds=60))
    low = submit_assigned(client, app, "fast", priority="LOW")
    med_late = submit_assigned(client, app, "slow")
    med_soon = submit_assigned(client, app, "fast")
    crit = submit_assigned(client, app, "slow", priority="CRITICAL")
    alice = operator("alice", "reviewers")
    assert inbox_ids(client, alice) == [crit, med_soon, med_late, low]
    r = client.get("/api/v1/inbox?page=2&limit=3", headers=alice).json
    assert [t["id"] for t in r["items"]] == [low]
    assert r["pagination"] == {"page": 2, "limit": 3, "totalItems": 4, "totalPages": 2}
    assert client.get("/api/v1/inbox?limit=0", headers=alice).status_code == 400
    assert client.get("/api/v1/inbox").status_code == 401


def test_load_balancing_never_exceeds_the_cap(client: Any, app: Any) -> None:
    """TEL_MANUAL_MAX_OPEN_TASKS=2 in this app: two candidates take four tasks, the fifth waits."""
    define(client, manual_def(assignment={"candidateUsers": ["u1", "u2"], "strategy": "LOAD_BALANCED"}))
    ids = [submit_assigned(client, app) for _ in range(5)]
    owners = [client.get(f"/api/v1/tasks/{i}", headers=ADMIN).json["assignee"] for i in ids]
    assert sorted(owners[:4]) == ["u1", "u1", "u2", "u2"]
    waiting = client.get(f"/api/v1/tasks/{ids[4]}", headers=ADMIN).json
    assert waiting["status"] == "PENDING" and waiting["assignee"] is None
    assert "task.assignment_deferred" in [e["type"] for e in events(client, ids[4])]
    first_u2 = ids[owners.index("u2")]
    assert client.post(f"/api/v1/tasks/{first_u2}/complete", json={"output": GOOD_OUTPUT},
                       headers=operator("u2")).status_code == 200
    assign(client, app, ids[4])  # the dispatcher re-publishes it; the pool asks again
    assert client.get(f"/api/v1/tasks/{ids[4]}", headers=ADMIN).json["assignee"] == "u2"


def test_operator_sees_only_own_or_offered_tasks_and_views_are_audited(client: Any, app: Any) -> None:
    define(client, manual_def())
    task_id = submit_assigned(client, app)
    assert client.get(f"/api/v1/tasks/{task_id}", headers=operator("eve", "other")).status_code == 404
    assert client.get(f"/api/v1/inbox/{task_id}", headers=operator("eve", "other")).status_code == 404
    r = client.get(f"/api/v1/inbox/{task_id}", headers=operator("alice", "reviewers"))
    assert r.status_code == 200
    assert r.json["formSchema"]["required"] == ["approved", "score"] and r.json["canClaim"] is True
    client.get(f"/api/v1/tasks/{task_id}", headers=operator("bob", "reviewers"))
    views = [(e["actor"], e["userAgent"]) for e in events(client, task_id) if e["type"] == "task.viewed"]
    assert ("alice", "pytest-alice") in views and ("bob", "pytest-bob") in views


def test_inbox_page_is_served_without_credentials(client: Any) -> None:
    r = client.get("/inbox")
    assert r.status_code == 200 and b"<title>Task inbox" in r.data
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert client.get("/inbox/static/inbox.js").status_code == 200
    assert client.get("/inbox/static/inbox.css").status_code == 200


def test_task_list_for_an_operator_holds_what_is_offered_to_them_with_right_totals(client: Any, app: Any) -> None:
    define(client, manual_def(assignment={"candidateRoles": ["reviewers"]}))
    define(client, manual_def("other", assignment={"candidateRoles": ["auditors"]}))
    mine = {submit_assigned(client, app) for _ in range(3)}
    submit_assigned(client, app, "other")
    r = client.get("/api/v1/tasks?limit=2", headers=operator("olga", "reviewers"))
    assert r.status_code == 200, r.json
    assert r.json["pagination"]["totalItems"] == 3 and r.json["pagination"]["totalPages"] == 2
    assert len(r.json["items"]) == 2
    second = client.get("/api/v1/tasks?limit=2&page=2", headers=operator("olga", "reviewers")).json
    assert {t["id"] for t in r.json["items"] + second["items"]} == mine
    assert client.get("/api/v1/tasks", headers=operator("nobody", "guests")).json["pagination"]["totalItems"] == 0
