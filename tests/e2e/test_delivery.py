"""Delivery guarantees end to end: worker killed mid-task, priorities, duplicates, orchestrator outage."""

from __future__ import annotations

import signal
import time

import docker
import pytest

from tests.e2e.helpers import define, get, python_def, submit, wait_status
from tests.support import Receiver, Stack, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_worker_killed_mid_task_is_redelivered_and_finishes_once(stack: Stack, receiver: Receiver,
                                                                 docker_client: docker.DockerClient) -> None:
    # A short visibility timeout (max task time + margin) so the lost message comes back within the test.
    extra = {"TEL_EXECUTOR_MAX_TIMEOUT": "15", "TEL_VISIBILITY_MARGIN": "5"}
    first = stack.start_worker("automated", name="doomed", concurrency=1, **extra)
    define(stack, python_def("slow", "import time\ndef main(input):\n    time.sleep(4)\n    return {'ok': True}\n",
                             resourceRequirements={"timeoutSeconds": 10}))
    task_id = submit(stack, "slow").json()["id"]
    wait_status(stack, task_id, {"RUNNING"}, timeout=30)
    killed_at = time.monotonic()
    first.stop(sig=signal.SIGKILL)  # no warm shutdown: the message stays unacknowledged in Redis
    assert get(stack, task_id)["status"] == "RUNNING"
    # Redis hands an unacknowledged message out again once the visibility timeout (15 + 5 s) has passed;
    # kombu checks at worker start-up and then every ~100 s, so the replacement starts after that point.
    time.sleep(max(0.0, 21 - (time.monotonic() - killed_at)))
    stack.start_worker("automated", name="rescuer", concurrency=1, **extra)
    task = wait_status(stack, task_id, timeout=90)
    assert task["status"] == "COMPLETED", task
    assert task["output"] == {"ok": True}
    history = requests_events(stack, task_id)
    assert history.count("task.instance.started") == 2  # the attempt was redelivered, not lost
    assert history.count("task.instance.completed") == 1
    wait_for(lambda: "task.instance.completed" in receiver.events_for(task_id), 15, what="completed event")
    assert receiver.events_for(task_id).count("task.instance.completed") == 1
    wait_for(lambda: not docker_client.containers.list(
        all=True, sparse=True, filters={"label": f"taskexec.task_id={task_id}"}), 20,
             what="no container left")


def requests_events(stack: Stack, task_id: str) -> list[str]:
    return [e["type"] for e in get(stack, task_id, "/events")["items"]]


def test_critical_overtakes_low(stack: Stack) -> None:
    define(stack, python_def("quick", "def main(input):\n    return input\n"))
    low = [submit(stack, "quick", {"n": i}, priority="LOW").json()["id"] for i in range(6)]
    critical = submit(stack, "quick", {"n": "c"}, priority="CRITICAL").json()["id"]
    stack.start_worker("automated", concurrency=1)
    tasks = {t: wait_status(stack, t) for t in [*low, critical]}
    order = sorted(tasks, key=lambda t: tasks[t]["executionMetadata"]["startTime"])
    assert order.index(critical) <= 1, [tasks[t]["input"] for t in order]


def test_duplicate_message_for_finished_task_does_not_run_again(stack: Stack, env: dict[str, str]) -> None:
    from taskexec.broker.celery_app import make_celery
    from taskexec.core.config import Settings
    from taskexec.services.dispatch import Publisher
    from taskexec.store.db import Database
    from taskexec.store.models import TaskInstance

    worker = stack.start_worker("automated", concurrency=1)
    define(stack, python_def("once", "def main(input):\n    print('ran')\n    return 1\n"))
    task_id = submit(stack, "once").json()["id"]
    assert wait_status(stack, task_id)["status"] == "COMPLETED"
    db = Database(env["DATABASE_URL"])
    with db.session() as s:
        token = s.get(TaskInstance, task_id).dispatch_token  # type: ignore[union-attr]
    db.dispose()
    settings = Settings(**{k: v for k, v in env.items() if k.startswith(("TEL_", "CELERY_"))})
    Publisher(settings, make_celery(settings)).publish(task_id, "AUTOMATED", "MEDIUM", token or "")
    wait_for(lambda: worker.text().count('"message skipped"') >= 1, 20, what="duplicate skipped")
    task = get(stack, task_id)
    assert task["status"] == "COMPLETED" and task["version"] == 3
    assert requests_events(stack, task_id).count("task.instance.started") == 1


def test_orchestrator_down_for_a_while_still_gets_every_event(stack: Stack, receiver: Receiver) -> None:
    stack.start_worker("automated", concurrency=1)
    define(stack, python_def("notify", "def main(input):\n    return {'done': True}\n"))
    receiver.healthy = False
    task_id = submit(stack, "notify").json()["id"]
    assert wait_status(stack, task_id)["status"] == "COMPLETED"
    time.sleep(2)
    assert receiver.events_for(task_id) == []
    receiver.healthy = True
    wait_for(lambda: len(receiver.events_for(task_id)) == 3, 30, what="all events after recovery")
    assert receiver.events_for(task_id) == ["task.instance.created", "task.instance.started",
                                            "task.instance.completed"]
