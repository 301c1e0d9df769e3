"""The worker-facing internal API (router side only): start, finish, retries, optimistic versions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session

from taskexec.core.constants import Status
from taskexec.core.exceptions import InvalidTransition, StaleVersion
from taskexec.store.db import Database
from taskexec.store.models import TaskInstance
from taskexec.store.statemachine import transition
from tests.api_helpers import API, assert_envelope, create_definition, definition, sql, submit
from tests.conftest import auth

SERVICE = auth("pool-1", "service")


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[Any]:
    """The router with an orchestrator configured, so every change also writes an outbox row."""
    from api import create_app
    from taskexec.core.config import Settings

    s = Settings(
        **{k: v for k, v in env.items() if k.startswith(("TEL_", "DATABASE_URL", "CELERY_", "LOG_"))},
        WORKFLOW_ORCHESTRATOR_URL="http://127.0.0.1:9/unused",
    )
    app = create_app(s, start_dispatcher=False)
    yield app
    app.extensions["taskexec"].db.dispose()


@pytest.fixture
def task_id(client: Any, admin: dict[str, str]) -> str:
    create_definition(client, admin)
    return submit(client, admin)


def token_of(database: str, task_id: str) -> str:
    return str(sql(database, "SELECT dispatch_token FROM task_instances WHERE id = %s", task_id)[0][0])


def start(client: Any, task_id: str, token: str, worker: str = "w1") -> Any:
    r = client.post(
        f"/internal/v1/tasks/{task_id}/start",
        json={"dispatchToken": token, "workerId": worker},
        headers=SERVICE,
    )
    assert r.status_code == 200, r.json
    return r.json


def finish(client: Any, task_id: str, **body: Any) -> Any:
    return client.post(f"/internal/v1/tasks/{task_id}/finish", json={"attempt": 1, **body}, headers=SERVICE)


def outbox_types(database: str, task_id: str) -> list[str]:
    rows = sql(database, "SELECT body::json->>'type' FROM outbox WHERE task_id = %s ORDER BY id", task_id)
    return [r[0] for r in rows]


def test_start_then_complete(client: Any, admin: dict[str, str], task_id: str, database: str) -> None:
    token = token_of(database, task_id)
    got = start(client, task_id, token)
    assert got["job"]["attempt"] == 1
    assert (
        got["job"]["task"]["input"] == {"name": "Ada"}
        and got["job"]["definition"]["executionConfig"]["runtime"] == "python"
    )
    assert start(client, task_id, "stale-token")["job"] is None
    detail = client.get(f"{API}/tasks/{task_id}", headers=admin).json
    assert detail["status"] == "RUNNING" and detail["executionMetadata"]["workerId"] == "w1"

    r = finish(client, task_id, status="COMPLETED", output={"hi": "Ada"}, stdout="hello\n")
    assert r.status_code == 200 and r.json["status"] == "COMPLETED"
    detail = client.get(f"{API}/tasks/{task_id}", headers=admin).json
    assert detail["status"] == "COMPLETED" and detail["output"] == {"hi": "Ada"}
    assert detail["executionMetadata"]["durationMs"] >= 0 and "endTime" in detail["executionMetadata"]
    assert client.get(f"{API}/tasks/{task_id}/logs", headers=admin).json["stdout"] == "hello\n"

    assert_envelope(finish(client, task_id, status="COMPLETED", output={"hi": "again"}), 409, "CONFLICT")
    again = start(client, task_id, token)  # a redelivered message never runs a finished task twice
    assert again["job"] is None and again["status"] == "COMPLETED"
    assert client.get(f"{API}/tasks/{task_id}", headers=admin).json["output"] == {"hi": "Ada"}
    assert outbox_types(database, task_id) == [
        "task.instance.created",
        "task.instance.started",
        "task.instance.completed",
    ]


def test_result_of_a_stale_attempt_is_409(client: Any, task_id: str, database: str) -> None:
    token = token_of(database, task_id)
    start(client, task_id, token, "w1")
    # a duplicate delivery while attempt 1 is within its deadline (w1 may be alive): it does not run
    assert start(client, task_id, token, "w2")["job"] is None
    # past the deadline (the broker redelivers only after its visibility timeout) w1 is taken for lost
    sql(database, "UPDATE task_instances SET execution_metadata = jsonb_set(execution_metadata::jsonb, "
                  "'{startTime}', '\"2000-01-01T00:00:00+00:00\"') WHERE id = %s", task_id)
    assert start(client, task_id, token, "w2")["job"]["attempt"] == 2  # redelivered after w1 was lost
    assert_envelope(finish(client, task_id, status="COMPLETED", output={"hi": "x"}), 409, "CONFLICT")
    assert finish(client, task_id, attempt=2, status="COMPLETED", output={"hi": "x"}).status_code == 200


def test_a_retried_start_call_gets_its_attempt_back(client: Any, task_id: str, database: str) -> None:
    def start_as(start_id: str) -> Any:
        body = {"dispatchToken": token_of(database, task_id), "workerId": "w1", "startId": start_id}
        r = client.post(f"/internal/v1/tasks/{task_id}/start", json=body, headers=SERVICE)
        assert r.status_code == 200, r.json
        return r.json

    first = start_as("delivery-1")
    again = start_as("delivery-1")  # the worker did not get the first answer and asks again
    assert first["job"] and again["job"] and again["job"]["attempt"] == first["job"]["attempt"] == 1
    assert start_as("delivery-2")["job"] is None  # another delivery of the same message: a duplicate
    assert sql(database, "SELECT attempt FROM task_instances WHERE id = %s", task_id)[0][0] == 1


def test_output_failing_output_schema_fails_the_task(
    client: Any, admin: dict[str, str], task_id: str, database: str
) -> None:
    start(client, task_id, token_of(database, task_id))
    r = finish(client, task_id, status="COMPLETED", output={"hi": 42})
    assert r.status_code == 200 and r.json["status"] == "FAILED"
    detail = client.get(f"{API}/tasks/{task_id}", headers=admin).json
    assert detail["error"]["code"] == "OUTPUT_VALIDATION_ERROR" and detail["output"] is None
    assert any(d["field"] == "output.hi" for d in detail["error"]["details"])
    assert outbox_types(database, task_id)[-1] == "task.instance.failed"


def test_failed_with_retry_goes_back_to_pending(client: Any, admin: dict[str, str], database: str) -> None:
    create_definition(client, admin, definition(retryPolicy={"maxRetries": 1, "retryInterval": 10}))
    task_id = submit(client, admin)
    first_token = token_of(database, task_id)
    start(client, task_id, first_token)
    err = {"code": "NON_ZERO_EXIT", "message": "exit 1"}
    r = finish(client, task_id, status="FAILED", error=err, retry=True)
    assert r.status_code == 200 and r.json == {"id": task_id, "status": "PENDING", "retryCount": 1}
    assert outbox_types(database, task_id)[-1] == "task.instance.retry"
    new_token = token_of(database, task_id)
    assert new_token != first_token
    assert start(client, task_id, first_token)["job"] is None  # the old message is superseded

    second = start(client, task_id, new_token)
    assert second["job"]["attempt"] == 2 and second["job"]["task"]["retryCount"] == 1
    r = finish(client, task_id, attempt=2, status="FAILED", error=err, retry=True)  # retries spent
    assert r.json["status"] == "FAILED"
    detail = client.get(f"{API}/tasks/{task_id}", headers=admin).json
    assert detail["error"]["code"] == "MAX_RETRIES_EXCEEDED"
    assert detail["error"]["details"]["lastError"]["code"] == "NON_ZERO_EXIT"


def test_start_of_cancelled_task_does_not_run(
    client: Any, admin: dict[str, str], task_id: str, database: str
) -> None:
    client.post(f"{API}/tasks/{task_id}/cancel", headers=admin)
    assert start(client, task_id, token_of(database, task_id))["job"] is None


def test_bad_internal_bodies(client: Any, task_id: str, database: str) -> None:
    start(client, task_id, token_of(database, task_id))
    r = finish(client, task_id, status="DONE")
    assert_envelope(r, r.status_code if r.status_code in (400, 422) else 400, "VALIDATION_ERROR", "status")
    assert_envelope(
        finish(client, task_id, attempt=0, status="COMPLETED"), 422, "VALIDATION_ERROR", "attempt"
    )
    r = client.post(f"/internal/v1/tasks/{task_id}/start", json={"workerId": "w"}, headers=SERVICE)
    assert_envelope(r, 400, "VALIDATION_ERROR", "dispatchToken")
    assert_envelope(client.post("/internal/v1/sweeps/nope", headers=SERVICE), 404, "NOT_FOUND")


def load(session: Session, task_id: str) -> TaskInstance:
    task = session.get(TaskInstance, task_id)
    assert task is not None
    return task


def test_two_concurrent_writers_second_gets_stale_version(
    env: dict[str, str], task_id: str, database: str
) -> None:
    db = Database(env["DATABASE_URL"])
    try:
        with db.session() as first, db.session() as second:
            a, b = load(first, task_id), load(second, task_id)
            assert a.version == b.version == 1
            transition(first, a, Status.RUNNING, actor="w1")
            first.commit()
            with pytest.raises(StaleVersion):
                transition(second, b, Status.CANCELLED, actor="user")
            second.rollback()
        assert sql(database, "SELECT status, version FROM task_instances WHERE id = %s", task_id) == [
            ("RUNNING", 2)
        ]
        events = sql(database, "SELECT to_status FROM task_events WHERE task_id = %s ORDER BY id", task_id)
        assert [e[0] for e in events] == ["PENDING", "RUNNING"]
        with db.session() as s:
            task = load(s, task_id)
            transition(s, task, Status.COMPLETED, actor="w1")
            with pytest.raises(InvalidTransition):
                transition(s, task, Status.PENDING, actor="x")  # COMPLETED is final
    finally:
        db.dispose()


def test_result_with_nul_bytes_is_still_recorded(
    client: Any, admin: dict[str, str], task_id: str, database: str
) -> None:
    start(client, task_id, token_of(database, task_id))
    r = finish(
        client, task_id, status="COMPLETED", output={"hi": "a\u0000b"}, stdout="x\u0000y", stderr="\u0000"
    )
    assert r.status_code == 200 and r.json["status"] == "COMPLETED"
    assert client.get(f"{API}/tasks/{task_id}", headers=admin).json["output"] == {"hi": "a\ufffdb"}
    assert client.get(f"{API}/tasks/{task_id}/logs", headers=admin).json == {
        "id": task_id,
        "stdout": "x\ufffdy",
        "stderr": "\ufffd",
    }


def _attempt(client: Any, database: str, task_id: str, attempt: int, **result: Any) -> Any:
    """Start the task's current dispatch and report `result` for it."""
    start(client, task_id, token_of(database, task_id))
    r = finish(client, task_id, attempt=attempt, **result)
    assert r.status_code == 200, r.json
    return r.json


@pytest.mark.parametrize("error_code, status, listed, worker_retry, retried", [
    ("NON_ZERO_EXIT", "FAILED", ["NON_ZERO_EXIT"], False, True),   # the policy decides, not the worker
    ("MEMORY_LIMIT_EXCEEDED", "FAILED", ["NON_ZERO_EXIT"], False, False),
    ("TIME_LIMIT_EXCEEDED", "TIMED_OUT", ["TIME_LIMIT_EXCEEDED"], False, True),
    ("SANDBOX_ERROR", "FAILED", None, True, True),                  # no list: our own fault is retried
    ("NON_ZERO_EXIT", "FAILED", None, False, False),                # no list: the user's error is final
    ("INTEGRATION_ERROR", "FAILED", ["CONNECTION_ERROR"], True, False),
    ("DESTINATION_NOT_ALLOWED", "FAILED", ["DESTINATION_NOT_ALLOWED"], True, False),  # never retried
], ids=["listed", "not-listed", "time-limit", "default-our-fault", "default-user-error", "list-overrides-worker",
        "egress-refusal"])
def test_retryable_errors_decide_for_every_task_type(
        client: Any, admin: dict[str, str], database: str, error_code: str, status: str, listed: list[str] | None,
        worker_retry: bool, retried: bool) -> None:
    policy: dict[str, Any] = {"maxRetries": 1, "retryInterval": 10}
    if listed is not None:
        policy["retryableErrors"] = listed
    create_definition(client, admin, definition(retryPolicy=policy))
    task_id = submit(client, admin)
    got = _attempt(client, database, task_id, 1, status=status, retry=worker_retry,
                   error={"code": error_code, "message": "it failed"})
    assert got["status"] == ("PENDING" if retried else status), got
    if retried:  # and the second failure spends the single retry
        got = _attempt(client, database, task_id, 2, status=status, retry=worker_retry,
                       error={"code": error_code, "message": "it failed again"})
        assert got == {"id": task_id, "status": status, "retryCount": 1}
        detail = client.get(f"{API}/tasks/{task_id}", headers=admin).json
        assert detail["error"]["code"] == "MAX_RETRIES_EXCEEDED"
        assert detail["error"]["details"]["cause"] == error_code
        assert sql(database, "SELECT count(*) FROM dead_letters WHERE task_id = %s", task_id) == [(1,)]
    else:
        detail = client.get(f"{API}/tasks/{task_id}", headers=admin).json
        assert detail["error"]["code"] == error_code and detail["retryCount"] == 0


def test_output_validation_error_is_retried_when_the_policy_lists_it(
        client: Any, admin: dict[str, str], database: str) -> None:
    """The router, not the worker, finds an output failing outputSchema: its retry is decided there."""
    create_definition(client, admin, definition(retryPolicy={"maxRetries": 1, "retryInterval": 10,
                                                             "retryableErrors": ["OUTPUT_VALIDATION_ERROR"]}))
    task_id = submit(client, admin)
    assert _attempt(client, database, task_id, 1, status="COMPLETED", output={"hi": 42})["status"] == "PENDING"
    assert outbox_types(database, task_id)[-1] == "task.instance.retry"
    assert _attempt(client, database, task_id, 2, status="COMPLETED", output={"hi": "Ada"})["status"] == "COMPLETED"
def test_reports_travel_together_and_each_gets_its_own_answer(
    client: Any, admin: dict[str, str], database: str
) -> None:
    """A pool's threads send their reports in one call: each is answered as its own endpoint would, in order;
    the starts go through together, so do the finishes, and one failing report fails alone."""
    create_definition(client, admin)
    ids = [submit(client, admin, input={"name": f"n{i}"}) for i in range(4)]
    tokens = [token_of(database, t) for t in ids]

    def reports(*items: dict[str, Any]) -> list[dict[str, Any]]:
        r = client.post("/internal/v1/reports", json={"items": list(items)}, headers=SERVICE)
        assert r.status_code == 200, r.json
        return r.json["results"]  # type: ignore[no-any-return]

    started = reports(*[{"kind": "start", "taskId": t, "dispatchToken": tok, "workerId": "w1"}
                        for t, tok in zip(ids, tokens, strict=True)],
                      {"kind": "start", "taskId": ids[0], "dispatchToken": "stale", "workerId": "w2"},
                      {"kind": "start", "taskId": "no-such-task", "dispatchToken": "x", "workerId": "w2"})
    assert [r["status"] for r in started] == [200, 200, 200, 200, 200, 404]
    assert [r["result"]["job"]["task"]["input"]["name"] for r in started[:4]] == ["n0", "n1", "n2", "n3"]
    assert started[4]["result"]["job"] is None and "stale" in started[4]["result"]["reason"]
    assert started[5]["error"]["code"] == "NOT_FOUND"

    finished = reports(
        {"kind": "finish", "taskId": ids[0], "attempt": 1, "status": "COMPLETED", "output": {"hi": "n0"},
         "stdout": "out\x00put"},
        {"kind": "finish", "taskId": ids[1], "attempt": 1, "status": "COMPLETED", "output": {"hi": 42}},
        {"kind": "finish", "taskId": ids[2], "attempt": 2, "status": "COMPLETED", "output": {"hi": "n2"}},
        {"kind": "finish", "taskId": ids[3], "attempt": 1, "status": "FAILED", "retry": False,
         "error": {"code": "NON_ZERO_EXIT", "message": "exit 1"}},
        {"kind": "defer", "taskId": ids[2], "attempt": 1, "delayMs": 5000, "reason": "rate limit"},
    )
    assert [r["status"] for r in finished] == [200, 200, 409, 200, 200]
    assert [r["result"]["status"] if r["status"] == 200 else None for r in finished] == [
        "COMPLETED", "FAILED", None, "FAILED", "PENDING"]  # ids[1]: its output fails the outputSchema
    assert finished[2]["error"]["code"] == "CONFLICT"
    rows = dict((r[0], r[1:]) for r in sql(
        database, "SELECT id, status, error->>'code', stdout, execution_metadata ? 'durationMs' FROM task_instances"))
    assert rows[ids[0]] == ("COMPLETED", None, "out\ufffdput", True)
    assert rows[ids[1]][:2] == ("FAILED", "OUTPUT_VALIDATION_ERROR")
    assert rows[ids[2]][:1] == ("PENDING",) and rows[ids[3]][:2] == ("FAILED", "NON_ZERO_EXIT")
    for task_id, last in zip(ids, ("completed", "failed", None, "failed"), strict=True):
        types = outbox_types(database, task_id)
        assert types[:2] == ["task.instance.created", "task.instance.started"], types
        if last:
            assert types[2:] == [f"task.instance.{last}"], types


def test_reports_body_is_checked(client: Any) -> None:
    r = client.post("/internal/v1/reports", json={"items": [{"kind": "explode", "taskId": "x"}]}, headers=SERVICE)
    assert_envelope(r, 422, "VALIDATION_ERROR", "items.0")
    r = client.post("/internal/v1/reports", json={"items": [{"kind": "start", "taskId": "x"}]}, headers=SERVICE)
    assert_envelope(r, 400, "VALIDATION_ERROR", "items.0.start.dispatchToken")
    assert_envelope(client.post("/internal/v1/reports", json={"items": []}, headers=SERVICE), 422, "VALIDATION_ERROR",
                    "items")
    r = client.post("/internal/v1/reports", json={"items": []}, headers=auth("sam", "submitter"))
    assert_envelope(r, 403, "FORBIDDEN")


def test_change_state_writes_the_audit_event_the_outbox_event_and_calls_the_hooks(
    env: dict[str, str], task_id: str, database: str
) -> None:
    from taskexec.core.config import Settings
    from taskexec.core.constants import AuditEvent, EventType
    from taskexec.store.statechange import change_state, disconnect, on_state_change

    settings = Settings(DATABASE_URL=env["DATABASE_URL"], WORKFLOW_ORCHESTRATOR_URL="http://127.0.0.1:9/unused")
    seen: list[tuple[str, str]] = []

    def hook(_s: Session, task: TaskInstance, evt: Any) -> None:
        seen.append((task.id, evt.type))

    def broken(_s: Session, _task: TaskInstance, _evt: Any) -> None:
        raise RuntimeError("a hook's bug must not fail the change")

    on_state_change(hook)
    on_state_change(broken)
    db = Database(env["DATABASE_URL"])
    try:
        with db.session() as s:
            task = load(s, task_id)
            change_state(s, settings, task, Status.RUNNING, actor="w1", worker_id="w1")
            change_state(s, settings, task, Status.PENDING, actor="w1", audit_type=AuditEvent.DEFERRED,
                         details={"reason": "rate limit"}, worker_id=None)
    finally:
        disconnect(hook)
        disconnect(broken)
        db.dispose()
    assert seen == [(task_id, EventType.STARTED.value), (task_id, AuditEvent.DEFERRED.value)]
    audit = sql(database, "SELECT type, to_status FROM task_events WHERE task_id = %s ORDER BY id", task_id)
    assert audit == [(EventType.CREATED.value, "PENDING"), (EventType.STARTED.value, "RUNNING"),
                     (AuditEvent.DEFERRED.value, "PENDING")]
    sent = sql(database, "SELECT body::json->>'type' FROM outbox WHERE task_id = %s AND target = 'orchestrator' "
                         "ORDER BY id", task_id)
    # the deferral is audit-only: it is not announced to the orchestrator
    assert [row[0] for row in sent] == [EventType.CREATED.value, EventType.STARTED.value]
