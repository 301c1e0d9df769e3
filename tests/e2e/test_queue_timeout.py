"""Queued timeout end to end: no worker for a while, the task times out, the worker that comes later runs nothing.

Real router (gunicorn, dispatcher thread publishing to Redis), real automated worker and Docker engine.
The `queued` sweep is called the way the manual pool calls it for `taskexec beat` (the service key).
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.e2e.helpers import define, get, python_def, submit
from tests.support import Stack, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_a_late_worker_runs_nothing_for_a_task_that_timed_out_in_its_queue(stack: Stack, receiver: Any,
                                                                           docker_client: Any) -> None:
    define(stack, python_def("unwanted", "def main(input):\n    return 1\n", queuedTimeoutSeconds=1))
    task_id = submit(stack, "unwanted").json()["id"]
    service = {"X-API-Key": stack.service_key}

    def swept() -> bool:
        r = requests.post(f"{stack.url}/internal/v1/sweeps/queued", headers=service, timeout=10)
        assert r.status_code == 200, r.text
        return task_id in r.json()["queued"]

    wait_for(swept, 30, interval=0.3, what="the queued sweep ends the task")
    task = get(stack, task_id)
    assert (task["status"], task["error"]["code"]) == ("TIMED_OUT", "QUEUE_TIMEOUT"), task
    wait_for(lambda: receiver.events_for(task_id)[-1:] == ["task.instance.timed_out"], 15, what="timed_out event")

    worker = stack.start_worker("automated", concurrency=1)  # the message published at submission is still queued
    wait_for(lambda: task_id in worker.text() and '"message skipped"' in worker.text(), 30, what="message skipped")
    assert "is already TIMED_OUT" in worker.text()
    task = get(stack, task_id)
    # never started: no start time, only the submitting request's ids (taskexec.observability.tracing)
    assert task["status"] == "TIMED_OUT" and set(task["executionMetadata"] or {}) <= {"requestId", "traceparent"}, task
    assert "RUNNING" not in [e["toStatus"] for e in get(stack, task_id, "/events")["items"]]
    assert receiver.events_for(task_id) == ["task.instance.created", "task.instance.timed_out"]
    ran = docker_client.containers.list(all=True, filters={"label": f"taskexec.task_id={task_id}"})
    assert ran == []


def test_beat_sends_the_queued_sweep_to_the_manual_pool(settings: Any) -> None:
    """`taskexec beat` schedules it like `stale`: every 30 s on the manual queue, expiring if not taken."""
    from workers.scheduler import beat_schedule

    entry = beat_schedule(settings)["sweep-queued"]
    assert entry["args"] == ("queued",) and entry["schedule"] == 30.0
    assert entry["options"] == {"queue": settings.queue_manual, "expires": 60.0}
