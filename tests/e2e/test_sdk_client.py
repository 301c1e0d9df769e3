"""`taskexec.clients.sdk.TaskexecClient` against a running router (a real gunicorn process) and MANUAL worker.

Automated attempts are reported through the internal API as a pool would (no Docker needed here; the CLI test
runs real sandboxed tasks). Every error comes back as the exception of its envelope's code.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taskexec.clients.sdk import TaskexecClient
from taskexec.core.exceptions import (
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    Unavailable,
    ValidationFailed,
    WaitTimeout,
)
from taskexec.store.auth import create_api_key
from taskexec.store.db import Database
from tests.api_helpers import APPROVE, GREET
from tests.conftest import make_token
from tests.e2e.helpers import finish_via_internal_api
from tests.integration_support import module_stack
from tests.manual_support import GOOD_OUTPUT, manual_def
from tests.support import Stack, free_port

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def sdk_stack(pg_template: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with module_stack(tmp_path_factory.mktemp("sdk")) as (stack, _receiver):
        stack.start_worker("manual", concurrency=1)
        yield stack


@pytest.fixture(scope="module")
def tel(sdk_stack: Stack) -> Iterator[TaskexecClient]:
    with TaskexecClient(sdk_stack.url, make_token("ada", ("admin",))) as client:
        client.apply_definition(GREET)
        client.apply_definition({**GREET, "id": "greet-once", "retryPolicy": {"maxRetries": 0}})
        client.apply_definition(manual_def("review", assignment={"role": "reviewers"}))
        yield client


def as_user(stack: Stack, sub: str, *roles: str) -> TaskexecClient:
    return TaskexecClient(stack.url, make_token(sub, roles))


def test_definitions_apply_register_get_list(tel: TaskexecClient) -> None:
    body = {**APPROVE, "id": f"d-{uuid.uuid4().hex[:6]}"}
    first, created = tel.apply_definition(body)
    assert created and first.version == "1.0.0" and first.type == "MANUAL"
    same, created = tel.apply_definition(body)
    assert not created and same.version == "1.0.0"
    assert tel.register_definition({**body, "name": "Approve v2"}).version == "1.0.1"
    assert tel.get_definition(body["id"]).name == "Approve v2"
    assert tel.get_definition(body["id"], version="1.0.0").name == APPROVE["name"]
    listed = tel.list_definitions(search=body["id"])
    assert [d.id for d in listed.items] == [body["id"]] and listed.pagination.total_items == 1


def test_submit_is_idempotent_and_errors_are_envelope_exceptions(sdk_stack: Stack, tel: TaskexecClient) -> None:
    key = f"order-{uuid.uuid4().hex[:8]}"
    sent = tel.submit("greet", {"name": "Ada"}, idempotency_key=key, priority="HIGH", correlation_id=key)
    again = tel.submit("greet", {"name": "Ada"}, idempotency_key=key, priority="HIGH", correlation_id=key)
    assert again.id == sent.id and again.replayed and not sent.replayed and sent.status == "PENDING"
    with pytest.raises(ValidationFailed) as reused:
        tel.submit("greet", {"name": "Bob"}, idempotency_key=key)
    assert reused.value.status == 422 and reused.value.field == "Idempotency-Key"
    task = tel.get(sent.id)
    assert task.priority == "HIGH" and task.input == {"name": "Ada"} and not task.finished
    assert [t.id for t in tel.list_tasks(correlation_id=key).items] == [sent.id]
    assert [t.id for t in tel.list_tasks(search=sent.id[:8]).items] == [sent.id]
    soon = datetime.now(UTC) + timedelta(hours=1)
    assert tel.list_tasks(created_after=soon).items == []

    with pytest.raises(NotFound) as missing:
        tel.get(str(uuid.uuid4()))
    assert missing.value.code == "NOT_FOUND" and missing.value.status == 404
    with pytest.raises(NotFound) as unknown:
        tel.submit("no-such-definition", {})
    assert unknown.value.field == "taskDefinitionId"
    with pytest.raises(ValidationFailed) as bad:
        tel.submit("greet", {"times": 0})
    assert {d["field"] for d in bad.value.details} == {"input.name", "input.times"}
    with pytest.raises(Forbidden):
        as_user(sdk_stack, "olga", "monitor").submit("greet", {"name": "x"})
    with pytest.raises(Unauthorized):
        TaskexecClient(sdk_stack.url, "tel_not-a-key").get(sent.id)
    with pytest.raises(NotFound):  # an id cannot leave its path segment
        tel.get("../definitions/greet")


def test_submit_batch_answers_each_item(tel: TaskexecClient) -> None:
    key = f"batch-{uuid.uuid4().hex[:8]}"
    items = [{"taskDefinitionId": "greet", "input": {"name": "Ada"}, "idempotencyKey": key},
             {"taskDefinitionId": "greet", "input": {"times": 0}},
             {"taskDefinitionId": "no-such-definition", "input": {}}]
    first = tel.submit_batch(items)
    assert [r.http_status for r in first] == [201, 422, 404]
    assert first[0].ok and first[0].status == "PENDING" and not first[1].ok
    assert first[1].error is not None and first[1].error.code == "VALIDATION_ERROR"
    assert tel.get(first[0].id or "").input == {"name": "Ada"}
    again = tel.submit_batch(items[:1])  # the same key: the first task, not a second one
    assert [(r.http_status, r.id) for r in again] == [(200, first[0].id)]


def test_wait_inbox_claim_complete_reassign(sdk_stack: Stack, tel: TaskexecClient) -> None:
    first = tel.submit("review", {"doc": "a.pdf"}).id
    second = tel.submit("review", {"doc": "b.pdf"}).id
    assert tel.wait(first, until={"ASSIGNED"}, timeout=30).status == "ASSIGNED"
    tel.wait(second, until={"ASSIGNED"}, timeout=30)
    rita = as_user(sdk_stack, "rita", "operator", "reviewers")
    assert {first, second} <= {t.id for t in rita.inbox(limit=100).items}
    detail = rita.inbox_task(first)
    assert detail.can_claim and detail.task_name == "Review (review)" and detail.form_schema["required"]
    claimed = rita.claim(first)
    assert claimed.assignee == "rita" and claimed.claimed_at is not None
    with pytest.raises(Conflict):
        as_user(sdk_stack, "sam", "operator", "reviewers").claim(first)
    with pytest.raises(ValidationFailed) as wrong:
        rita.complete(first, {"approved": True, "score": 9})
    assert wrong.value.field == "output.score"
    assert rita.complete(first, GOOD_OUTPUT).status == "COMPLETED"
    done = tel.wait(first, timeout=10)
    assert done.status == "COMPLETED" and done.output == GOOD_OUTPUT and done.finished
    kinds = [e.type for e in tel.events(first)]
    assert "task.claimed" in kinds and "task.completion_rejected" in kinds and kinds[-1] == "task.instance.completed"
    moved = tel.reassign(second, "sam", "holiday")
    assert moved.assignee == "sam" and tel.get(second).assignee == "sam"


def test_wait_times_out_and_cancel(tel: TaskexecClient) -> None:
    task_id = tel.submit("greet", {"name": "never run"}).id  # no automated pool: stays PENDING
    with pytest.raises(WaitTimeout) as late:
        tel.wait(task_id, timeout=0.5, interval=0.1)
    assert late.value.status == "PENDING" and late.value.task_id == task_id
    assert tel.cancel(task_id, "not needed").status == "CANCELLED"
    with pytest.raises(Conflict) as twice:
        tel.cancel(task_id)
    assert twice.value.status == 409
    assert tel.events(task_id)[-1].to_status == "CANCELLED"


def test_logs_retry_dead_letters_and_redrive(sdk_stack: Stack, tel: TaskexecClient) -> None:
    failed = tel.submit("greet", {"name": "f"}).id
    finish_via_internal_api(sdk_stack, failed, retry=False, stdout="hello\n", stderr="disk full\n")
    logs = tel.logs(failed)
    assert (logs.stdout, logs.stderr) == ("hello\n", "disk full\n")
    assert tel.get(failed).error is not None and tel.get(failed).error.code == "NON_ZERO_EXIT"  # type: ignore[union-attr]
    assert tel.retry(failed).status == "PENDING"
    with pytest.raises(Conflict):
        tel.retry(failed)

    dead = tel.submit("greet-once", {"name": "d"}).id
    finish_via_internal_api(sdk_stack, dead)  # retries spent: FAILED and a dead letter
    letters = tel.dead_letters(resolved=False, task_id=dead).items
    assert len(letters) == 1 and letters[0].task_status == "FAILED" and letters[0].error is not None
    redriven = tel.redrive(letters[0].id)
    assert redriven.task_id == dead and redriven.status == "PENDING"
    with pytest.raises(Conflict):
        tel.redrive(letters[0].id)
    with pytest.raises(Forbidden):
        as_user(sdk_stack, "sam", "submitter").redrive(letters[0].id)
    assert tel.dead_letters(resolved=True, task_id=dead).pagination.total_items == 1


def test_api_key_identity_and_unreachable_router(sdk_stack: Stack, tmp_path: Path) -> None:
    db = Database(sdk_stack.env["DATABASE_URL"])
    with db.session() as s:
        _, key = create_api_key(s, "ci-bot", ["submitter"])
    db.dispose()
    me = TaskexecClient(sdk_stack.url, key).me()
    assert (me.sub, me.kind, me.roles) == ("apikey:ci-bot", "api_key", ["submitter"])
    assert "tasks:execute" in me.permissions and "admin" not in me.permissions
    gone = TaskexecClient(f"http://127.0.0.1:{free_port()}", key, retries=1, timeout=2)
    with pytest.raises(Unavailable):
        gone.get("x")
