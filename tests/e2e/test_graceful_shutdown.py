"""SIGTERM drains a worker: it takes no new task, lets the running one finish, then exits.

Real router (gunicorn), real Celery worker processes, real Redis, PostgreSQL and Docker. This is what
Kubernetes does on a rollout, a scale-down or a node drain (SIGTERM, then SIGKILL after
terminationGracePeriodSeconds), and `docker compose stop` (SIGTERM, then SIGKILL after 10 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.e2e.helpers import define, get, python_def, submit, wait_status
from tests.support import Stack, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SLOW = "import time\ndef main(input):\n    time.sleep(4)\n    return {'done': input.get('n')}\n"


def events(stack: Stack, task_id: str) -> list[str]:
    return [e["type"] for e in get(stack, task_id, "/events")["items"]]


def test_sigterm_finishes_the_running_task_takes_no_new_one_and_exits(stack: Stack) -> None:
    # Two slots, so the draining worker would have room for a second task if it still consumed.
    draining = stack.start_worker("automated", name="draining", concurrency=2)
    define(stack, python_def("slow", SLOW, resourceRequirements={"timeoutSeconds": 30}))
    running = submit(stack, "slow", {"n": 1}).json()["id"]
    wait_status(stack, running, {"RUNNING"}, timeout=30)

    os.killpg(draining.popen.pid, signal.SIGTERM)  # what the kubelet sends first
    signalled = time.monotonic()
    time.sleep(0.5)  # the worker cancels its queue consumer on the signal
    later = submit(stack, "slow", {"n": 2}).json()["id"]

    # The running task is not interrupted: it finishes, once, and only then does the worker exit.
    task = wait_status(stack, running, timeout=60)
    assert task["status"] == "COMPLETED", task
    assert task["output"] == {"done": 1} and task["retryCount"] == 0
    assert events(stack, running).count("task.instance.started") == 1
    try:
        code = draining.popen.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the worker did not exit after its running task finished:\n" + draining.text()[-3000:])
    assert code == 0, draining.text()[-3000:]
    assert time.monotonic() - signalled >= 2  # it waited for the task (about 4 s) rather than dying at once
    assert "warm shutdown" in draining.text().lower()

    # The task submitted after the signal was not taken by the draining worker: it waits in the queue...
    time.sleep(1)
    waiting = get(stack, later)
    assert waiting["status"] == "PENDING", waiting
    assert "task.instance.started" not in events(stack, later)
    # ...until another worker comes up and runs it.
    stack.start_worker("automated", name="successor", concurrency=1)
    done = wait_status(stack, later, timeout=60)
    assert done["status"] == "COMPLETED" and done["output"] == {"done": 2}, done
    wait_for(lambda: events(stack, later).count("task.instance.started") == 1, 10, what="one start for the later task")
