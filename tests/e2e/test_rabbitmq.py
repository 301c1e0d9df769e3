"""The same guarantees over RabbitMQ (AMQP 0-9-1) instead of Redis: a real broker, real processes.

RabbitMQ is started by scripts/services.sh (TEL_TEST_AMQP_URL); these tests fail, not skip, without it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from kombu import Connection

from tests.e2e.helpers import define, get, python_def, submit, wait_status
from tests.support import AMQP_URL, Receiver, Stack, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def amqp_stack(env: dict[str, str], receiver: Receiver, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack({**env, "CELERY_BROKER_URL": AMQP_URL, "WORKFLOW_ORCHESTRATOR_URL": receiver.url}, tmp_path)
    stack.start_router()
    yield stack
    stack.stop()
    with Connection(AMQP_URL) as conn:  # the stack's queues are its own: drop them
        channel = conn.channel()
        for key, name in env.items():
            if key.startswith("TEL_QUEUE_"):
                try:
                    channel.queue_delete(name)
                except Exception:  # noqa: BLE001 - never declared by this test
                    channel = conn.channel()


def test_router_is_ready_on_amqp_and_critical_overtakes_low(amqp_stack: Stack, receiver: Receiver) -> None:
    import requests

    ready = requests.get(amqp_stack.url + "/ready", timeout=5)
    assert ready.status_code == 200 and ready.json()["checks"]["broker"] == "UP"
    define(amqp_stack, python_def("echo", "def main(input):\n    return input\n"))
    low = [submit(amqp_stack, "echo", {"n": i}, priority="LOW").json()["id"] for i in range(5)]
    critical = submit(amqp_stack, "echo", {"n": "c"}, priority="CRITICAL").json()["id"]
    amqp_stack.start_worker("automated", concurrency=1)
    tasks = {t: wait_status(amqp_stack, t) for t in [*low, critical]}
    assert all(t["status"] == "COMPLETED" for t in tasks.values())
    assert tasks[critical]["output"] == {"n": "c"}
    order = sorted(tasks, key=lambda t: tasks[t]["executionMetadata"]["startTime"])
    assert order.index(critical) <= 1, [tasks[t]["input"] for t in order]
    wait_for(lambda: "task.instance.completed" in receiver.events_for(critical), 15, what="completed event")


def test_worker_killed_mid_task_finishes_exactly_once(amqp_stack: Stack, docker_client: docker.DockerClient) -> None:
    """AMQP hands an unacknowledged message back as soon as the dead worker's connection closes."""
    doomed = amqp_stack.start_worker("automated", name="doomed", concurrency=1)
    define(amqp_stack, python_def("slow", "import time\ndef main(input):\n    time.sleep(3)\n    return {'ok': 1}\n",
                                  resourceRequirements={"timeoutSeconds": 30}))
    task_id = submit(amqp_stack, "slow").json()["id"]
    wait_status(amqp_stack, task_id, {"RUNNING"}, timeout=30)
    doomed.stop(sig=signal.SIGKILL)
    amqp_stack.start_worker("automated", name="rescuer", concurrency=1)
    task = wait_status(amqp_stack, task_id, timeout=60)
    assert task["status"] == "COMPLETED" and task["output"] == {"ok": 1}, task
    events = [e["type"] for e in get(amqp_stack, task_id, "/events")["items"]]
    assert events.count("task.instance.completed") == 1
    assert events.count("task.instance.started") == 2
    wait_for(lambda: not docker_client.containers.list(
        all=True, sparse=True, filters={"name": task_id}), 20, what="no container left")
