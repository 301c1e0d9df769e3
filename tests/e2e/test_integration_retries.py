"""Integration tasks against a real HTTP target: retries, timeouts, Retry-After, authentication failure."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.http_target import Reply, Target, json_reply, sequence
from tests.integration_support import FAST_RETRY, events, http_def, module_stack, run, start_pool
from tests.support import Receiver, Stack, wait_for

OPEN_S = 2.0


@pytest.fixture(scope="module")
def pool(pg_template: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Receiver]]:
    """One router and one integration worker for the module (breaker open time shortened to 2 s)."""
    with module_stack(tmp_path_factory.mktemp("integration-retries")) as (stack, receiver):
        start_pool(stack, TEL_CIRCUIT_OPEN_SECONDS=str(OPEN_S))
        yield stack, receiver


@pytest.fixture
def stack(pool: tuple[Stack, Receiver]) -> Stack:
    return pool[0]


@pytest.fixture
def receiver(pool: tuple[Stack, Receiver]) -> Receiver:
    return pool[1]


@pytest.fixture
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


def test_503_twice_then_200_completes_with_two_retries(stack: Stack, target: Target, receiver: Receiver) -> None:
    url = target.on("/orders", sequence(Reply(503, {"e": 1}), Reply(503, {"e": 2}), json_reply({"id": "o-42"})))
    task = run(stack, http_def("flaky", url, retry=FAST_RETRY, responseMapping={"orderId": "$.id"},
                               output_schema={"type": "object", "required": ["orderId"]}))
    assert task["status"] == "COMPLETED", task
    assert task["retryCount"] == 2
    assert task["output"] == {"orderId": "o-42"}
    meta = task["executionMetadata"]
    assert meta["httpStatus"] == 200 and meta["endpoint"] == url and meta["method"] == "GET"

    calls = target.calls("/orders")
    assert len(calls) == 3
    keys = [c.headers["idempotency-key"] for c in calls]
    assert len(set(keys)) == 3 and all(k.startswith(f"tel-{task['id']}-") for k in keys)

    trail = events(stack, task["id"])
    retries = [e for e in trail if e["type"] == "task.instance.retry"]
    assert len(retries) == 2
    assert all(e["details"]["nextAttemptAt"] and e["details"]["error"]["code"] == "SERVICE_UNAVAILABLE"
               for e in retries)
    wait_for(lambda: "task.instance.completed" in receiver.events_for(task["id"]), 20, what="completed event")
    sent = [e for e in receiver.received if e["data"]["taskId"] == task["id"] and e["type"] == "task.instance.retry"]
    assert len(sent) == 2 and all(e["data"]["nextAttemptAt"] for e in sent)
    assert [e["data"]["retryCount"] for e in sent] == [1, 2]


def test_401_fails_at_once_with_authentication_error(stack: Stack, target: Target) -> None:
    url = target.on("/secure", Reply(401, {"error": "bad token"}))
    task = run(stack, http_def("unauth", url, retry=FAST_RETRY))
    assert task["status"] == "FAILED"
    assert task["error"]["code"] == "AUTHENTICATION_ERROR"
    assert task["error"]["details"]["httpStatus"] == 401
    assert task["retryCount"] == 0
    assert len(target.calls("/secure")) == 1


def test_other_4xx_is_not_retried(stack: Stack, target: Target) -> None:
    url = target.on("/missing", Reply(404, {"error": "nope"}))
    task = run(stack, http_def("missing", url, retry=FAST_RETRY))
    assert task["status"] == "FAILED" and task["error"]["code"] == "INTEGRATION_ERROR"
    assert task["retryCount"] == 0 and len(target.calls("/missing")) == 1


def test_stalled_target_ends_with_timeout_after_the_configured_retries(stack: Stack, target: Target) -> None:
    url = target.on("/stall", Reply(200, {"late": True}, delay=3.0))
    retry = {"maxRetries": 2, "retryInterval": 50, "backoffMultiplier": 2.0}
    task = run(stack, http_def("stalled", url, retry=retry, timeoutMs=300, connectTimeoutMs=500))
    assert task["status"] == "FAILED"
    err = task["error"]
    assert err["code"] == "MAX_RETRIES_EXCEEDED"
    assert err["details"]["cause"] == "TIMEOUT_ERROR"
    assert err["details"]["lastError"]["code"] == "TIMEOUT_ERROR"
    assert "timed out" in err["message"]
    assert task["retryCount"] == 2
    assert len(target.calls("/stall")) == 3


def test_429_honours_retry_after(stack: Stack, target: Target) -> None:
    url = target.on("/busy", sequence(Reply(429, {"slow": "down"}, {"Retry-After": "1"}), json_reply({"ok": 1})))
    task = run(stack, http_def("busy", url, retry={"maxRetries": 2, "retryInterval": 10, "backoffMultiplier": 1.0}))
    assert task["status"] == "COMPLETED" and task["retryCount"] == 1
    first, second = target.calls("/busy")
    assert second.at - first.at >= 0.95, "the retry came before Retry-After"
    retry = next(e for e in events(stack, task["id"]) if e["type"] == "task.instance.retry")
    assert retry["details"]["error"]["code"] == "RATE_LIMIT_ERROR"
    assert retry["details"]["error"]["details"]["retryAfterMs"] == 1000


def test_five_failures_open_the_breaker_and_the_sixth_fails_fast(stack: Stack, target: Target) -> None:
    state: dict[str, Any] = {"reply": Reply(500, {"error": "down"})}
    url = target.on("/fragile", lambda _seen: state["reply"])
    no_retry = {"maxRetries": 0, "retryInterval": 10, "backoffMultiplier": 1.0}
    definition = http_def("fragile", url, retry=no_retry)
    for _ in range(5):
        task = run(stack, definition)
        assert task["status"] == "FAILED" and task["error"]["code"] == "INTEGRATION_ERROR", task["error"]
    assert len(target.calls("/fragile")) == 5

    sixth = run(stack, definition)
    assert sixth["status"] == "FAILED"
    assert sixth["error"]["code"] == "CIRCUIT_OPEN", sixth["error"]
    assert sixth["error"]["details"]["host"] == f"127.0.0.1:{target.port}"
    assert len(target.calls("/fragile")) == 5, "the open circuit let a request through"

    # after the open period one trial goes through; its success closes the circuit again
    state["reply"] = json_reply({"ok": True})
    time.sleep(OPEN_S + 0.2)
    assert run(stack, definition)["status"] == "COMPLETED"
    assert run(stack, definition)["status"] == "COMPLETED"
    assert len(target.calls("/fragile")) == 7
