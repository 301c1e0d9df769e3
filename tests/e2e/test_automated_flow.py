"""End to end: real router (gunicorn), real Celery worker processes, real Redis, PostgreSQL and Docker."""

from __future__ import annotations

import time

import docker
import pytest

from tests.e2e.helpers import define, get, python_def, submit, wait_status
from tests.support import Stack, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HELLO = "def main(input):\n    return {'greeting': 'Hello, ' + input['name']}\n"


@pytest.fixture
def automated(stack: Stack) -> Stack:
    stack.start_worker("automated", concurrency=2)
    return stack


def test_submit_run_and_read_output(automated: Stack, receiver) -> None:  # type: ignore[no-untyped-def]
    define(automated, {**python_def("hello", HELLO),
                       "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}},
                                       "required": ["name"]},
                       "outputSchema": {"type": "object", "required": ["greeting"]}})
    r = submit(automated, "hello", {"name": "world"}, workflowInstanceId="wf-1")
    assert r.status_code == 201, r.text
    task = wait_status(automated, r.json()["id"])
    assert task["status"] == "COMPLETED", task
    assert task["output"] == {"greeting": "Hello, world"}
    meta = task["executionMetadata"]
    assert meta["exitCode"] == 0 and meta["durationMs"] >= 0 and meta["startTime"] and meta["endTime"]
    # the orchestrator hears created, started, completed in that order
    wait_for(lambda: receiver.events_for(task["id"])[-1:] == ["task.instance.completed"], 15, what="events")
    assert receiver.events_for(task["id"]) == ["task.instance.created", "task.instance.started",
                                               "task.instance.completed"]
    completed = [e for e in receiver.received if e["type"] == "task.instance.completed"][0]
    assert completed["data"]["output"] == {"greeting": "Hello, world"}
    assert completed["data"]["workflowInstanceId"] == "wf-1"
    assert completed["metadata"]["source"] == "task-execution-layer"


def test_input_failing_schema_is_422_naming_field(automated: Stack) -> None:
    define(automated, {**python_def("typed", HELLO),
                       "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}},
                                       "required": ["name"]}})
    r = submit(automated, "typed", {"name": 42})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "input.name"


def test_memory_bomb_fails_with_memory_limit(automated: Stack) -> None:
    code = "def main(input):\n    chunks = []\n    while True:\n        chunks.append(bytearray(8 * 2**20))\n"
    define(automated, python_def("bomb", code, resourceRequirements={"memory": "64Mi", "timeoutSeconds": 30}))
    task = wait_status(automated, submit(automated, "bomb").json()["id"])
    assert task["status"] == "FAILED", task
    assert task["error"]["code"] == "MEMORY_LIMIT_EXCEEDED"


def test_busy_loop_times_out(automated: Stack) -> None:
    define(automated, python_def("spin", "def main(input):\n    while True:\n        pass\n",
                                 resourceRequirements={"timeoutSeconds": 3}))
    started = time.monotonic()
    task = wait_status(automated, submit(automated, "spin").json()["id"], timeout=30)
    assert task["status"] == "TIMED_OUT", task
    assert task["error"]["code"] == "TIME_LIMIT_EXCEEDED"
    assert time.monotonic() - started < 3 + 10


def test_user_error_is_non_zero_exit_with_logs(automated: Stack) -> None:
    define(automated, python_def("boom", "def main(input):\n    print('about to fail')\n    raise ValueError('bad')\n"))
    task = wait_status(automated, submit(automated, "boom").json()["id"])
    assert task["status"] == "FAILED" and task["error"]["code"] == "NON_ZERO_EXIT", task
    logs = get(automated, task["id"], "/logs")
    assert "about to fail" in logs["stdout"]
    assert "ValueError" in logs["stderr"]


def test_idempotency_key_creates_one_task(automated: Stack) -> None:
    define(automated, python_def("idem", HELLO.replace("input['name']", "'x'")))
    first = submit(automated, "idem", headers={"Idempotency-Key": "k-1"})
    second = submit(automated, "idem", headers={"Idempotency-Key": "k-1"})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    wait_status(automated, first.json()["id"])


def test_cancel_running_task_kills_its_container(automated: Stack, docker_client: docker.DockerClient) -> None:
    import requests

    from tests.e2e.helpers import ADMIN

    define(automated, python_def("sleepy", "import time\ndef main(input):\n    time.sleep(60)\n",
                                 resourceRequirements={"timeoutSeconds": 120}))
    task_id = submit(automated, "sleepy").json()["id"]
    wait_status(automated, task_id, {"RUNNING"})
    client = docker_client
    wait_for(lambda: client.containers.list(sparse=True, filters={"label": f"taskexec.task_id={task_id}"}), 20,
             what="container running")
    r = requests.post(f"{automated.url}/api/v1/tasks/{task_id}/cancel", json={"reason": "changed my mind"},
                      headers=ADMIN, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
    t0 = time.monotonic()
    wait_for(lambda: not client.containers.list(
        all=True, sparse=True, filters={"label": f"taskexec.task_id={task_id}"}), 10,
             interval=0.1, what="container removed")
    assert time.monotonic() - t0 < 3
    assert get(automated, task_id)["status"] == "CANCELLED"


def test_user_mistakes_fail_with_actionable_codes_never_sandbox_error(automated: Stack) -> None:
    cases = {
        "syntax": ("x = 1\ndef main(input)\n    return 1\n", None, "NON_ZERO_EXIT", "line 2"),
        "nomain": ("print('no entry point')\nresult = 42\n", {"type": "object"}, "OUTPUT_VALIDATION_ERROR", ""),
        "badout": ("def main(input):\n    return {'n': 'x'}\n",
                   {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
                   "OUTPUT_VALIDATION_ERROR", "n"),
    }
    ids = {}
    for name, (code, out_schema, _, _) in cases.items():
        definition = python_def(f"mistake-{name}", code)
        if out_schema:
            definition["outputSchema"] = out_schema
        define(automated, definition)
        ids[name] = submit(automated, f"mistake-{name}").json()["id"]
    for name, (_, _, code, hint) in cases.items():
        task = wait_status(automated, ids[name])
        assert task["status"] == "FAILED", (name, task)
        assert task["error"]["code"] == code, (name, task["error"])
        assert hint in task["error"]["message"], (name, task["error"])
        assert task["retryCount"] == 0  # the user's fault: not retried


def test_missing_image_is_sandbox_error_and_retried(stack: Stack) -> None:
    stack.start_worker("automated", concurrency=1, TEL_SANDBOX_IMAGE_PYTHON="taskexec-sandbox-absent:0")
    definition = python_def("no-image", HELLO)
    definition["retryPolicy"] = {"maxRetries": 1, "retryInterval": 100}
    define(stack, definition)
    task = wait_status(stack, submit(stack, "no-image", {"name": "x"}).json()["id"], timeout=60)
    assert task["status"] == "FAILED" and task["retryCount"] == 1, task
    assert task["error"]["code"] == "MAX_RETRIES_EXCEEDED"
    assert task["error"]["details"]["lastError"]["code"] == "SANDBOX_ERROR"
