"""A worker killed with -9 mid-task: its container is reaped and the task is never stuck RUNNING."""

from __future__ import annotations

import contextlib
import signal

import docker
import pytest

from tests.e2e.helpers import define, get, python_def, submit, wait_status
from tests.support import Stack, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SLEEPER = "import time\ndef main(input):\n    time.sleep(120)\n    return {'ok': True}\n"


def _containers(task_id: str) -> list[object]:
    with contextlib.closing(docker.from_env()) as client:
        by_label = client.containers.list(
            all=True, sparse=True, filters={"label": f"taskexec.task_id={task_id}"})
        by_name = client.containers.list(
            all=True, sparse=True, filters={"name": task_id})  # pooled containers carry it in the name
    return by_label + by_name


def test_killed_worker_leaves_no_container_and_the_task_fails_cleanly(stack: Stack) -> None:
    doomed = stack.start_worker("automated", name="doomed", concurrency=1)
    definition = python_def("sleeper", SLEEPER, resourceRequirements={"timeoutSeconds": 300})
    definition["retryPolicy"] = {"maxRetries": 0}
    define(stack, definition)
    task_id = submit(stack, "sleeper").json()["id"]
    wait_status(stack, task_id, {"RUNNING"}, timeout=30)
    wait_for(lambda: _containers(task_id), 10, what="the task's container")
    doomed.stop(sig=signal.SIGKILL)
    assert _containers(task_id), "the container outlives its worker until the reaper runs"
    # The broker would redeliver only after the visibility timeout (an hour here); the next worker's
    # start-up reap finds the orphan at once, removes it and reports the attempt lost.
    stack.start_worker("automated", name="rescuer", concurrency=1)
    wait_for(lambda: not _containers(task_id), 30, what="orphaned container removed")
    task = wait_status(stack, task_id, {"FAILED"}, timeout=30)
    assert task["error"]["code"] == "SANDBOX_ERROR", task["error"]  # our fault, not the user's
    assert task["error"]["details"]["reason"] == "WORKER_LOST"
    assert "reaped" in task["error"]["message"]
    assert get(stack, task_id)["status"] == "FAILED"
