"""A definition's retryPolicy decides for automated tasks too: real router, real automated worker, real Docker.

`retryableErrors` names the codes worth another attempt (NON_ZERO_EXIT, TIME_LIMIT_EXCEEDED,
OUTPUT_VALIDATION_ERROR, ...); each retry waits `retryInterval * backoffMultiplier^n` (capped, ±20%
jitter); when retries are spent the task ends with MAX_RETRIES_EXCEEDED and its cause.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.e2e.helpers import define, get, python_def, submit, wait_status
from tests.support import Stack, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

EXIT_3 = "import sys\nsys.exit(3)\n"
POLICY = {"maxRetries": 2, "retryInterval": 200, "backoffMultiplier": 3, "maxRetryInterval": 500}


@pytest.fixture
def automated(stack: Stack) -> Stack:
    stack.start_worker("automated", concurrency=2)
    return stack


def retry_delays(stack: Stack, task_id: str) -> list[float]:
    """Seconds between each retry's audit event and the next attempt time it announced."""
    events = get(stack, task_id, "/events")["items"]
    return [(datetime.fromisoformat(e["details"]["nextAttemptAt"]) - datetime.fromisoformat(e["createdAt"]))
            .total_seconds() for e in events if e["type"] == "task.instance.retry"]


def test_non_zero_exit_listed_in_retryable_errors_is_retried_with_backoff(automated: Stack, receiver: Any) -> None:
    define(automated, python_def("exit3", EXIT_3) | {"retryPolicy": {**POLICY, "retryableErrors": ["NON_ZERO_EXIT"]}})
    task = wait_status(automated, submit(automated, "exit3").json()["id"])
    assert task["status"] == "FAILED" and task["retryCount"] == 2, task
    error = task["error"]
    assert error["code"] == "MAX_RETRIES_EXCEEDED", error
    assert error["details"]["cause"] == "NON_ZERO_EXIT" and error["details"]["lastError"]["code"] == "NON_ZERO_EXIT"
    # three attempts ran in containers, and the orchestrator heard about both retries
    events = get(automated, task["id"], "/events")["items"]
    assert [e["toStatus"] for e in events if e["fromStatus"] == "PENDING"] == ["RUNNING"] * 3
    wait_for(lambda: receiver.events_for(task["id"])[-1:] == ["task.instance.failed"], 15, what="failed event")
    assert receiver.events_for(task["id"]).count("task.instance.retry") == 2
    # backoff: 200 ms, then 600 ms capped at 500 ms, each with ±20% jitter
    first, second = retry_delays(automated, task["id"])
    assert 0.16 <= first <= 0.24 and 0.4 <= second <= 0.6, (first, second)


def test_codes_the_policy_does_not_list_are_final(automated: Stack) -> None:
    define(automated, python_def("exit3-other", EXIT_3)
           | {"retryPolicy": {**POLICY, "retryableErrors": ["TIME_LIMIT_EXCEEDED"]}})
    define(automated, python_def("exit3-default", EXIT_3))  # no retryPolicy: only our own faults are retried
    for def_id in ("exit3-other", "exit3-default"):
        task = wait_status(automated, submit(automated, def_id).json()["id"])
        assert (task["status"], task["error"]["code"], task["retryCount"]) == ("FAILED", "NON_ZERO_EXIT", 0), task


def test_time_limit_and_output_validation_errors_are_retried_when_listed(automated: Stack) -> None:
    define(automated, python_def("spin", "while True:\n    pass\n", resourceRequirements={"timeoutSeconds": 1})
           | {"retryPolicy": {**POLICY, "maxRetries": 1, "retryableErrors": ["TIME_LIMIT_EXCEEDED"]}})
    define(automated, python_def("bad-output", "def main(input):\n    return {'wrong': 1}\n")
           | {"outputSchema": {"type": "object", "required": ["right"]},
              "retryPolicy": {**POLICY, "maxRetries": 1, "retryableErrors": ["OUTPUT_VALIDATION_ERROR"]}})
    spin, bad = (submit(automated, d).json()["id"] for d in ("spin", "bad-output"))
    timed_out = wait_status(automated, spin)
    assert (timed_out["status"], timed_out["retryCount"]) == ("TIMED_OUT", 1), timed_out
    assert timed_out["error"]["details"]["cause"] == "TIME_LIMIT_EXCEEDED"
    failed = wait_status(automated, bad)
    assert (failed["status"], failed["retryCount"]) == ("FAILED", 1), failed
    assert failed["error"]["code"] == "MAX_RETRIES_EXCEEDED"
    assert failed["error"]["details"]["cause"] == "OUTPUT_VALIDATION_ERROR"
