"""The Docker engine restarted while sandbox containers run (a private dockerd; the system one is untouched).

An automated worker (a real process, DOCKER_HOST pointing at the private engine) runs tasks of a few
seconds and of 15 s when the engine is stopped with SIGTERM and started again on the same data root:
- a container that finishes within the engine's 10 s stop grace delivers its result (COMPLETED);
- a container the engine kills (the 15 s tasks) is an attempt lost by *our* infrastructure: SANDBOX_ERROR,
  retried by the retry policy (COMPLETED in a later attempt), or FAILED with that error when the policy
  allows no retry - never CANCELLED, never blamed on the user's code, never left RUNNING;
- an attempt that finds the engine down fails fast as SANDBOX_ERROR ("sandbox unavailable") and is retried.
The worker is not restarted: tasks submitted once the engine is back complete in one attempt, and no
container is left on the engine (the ones whose removal failed while it was down included).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskexec.core.config import Settings
from tests.e2e.helpers import define, get, python_def, submit, wait_status
from tests.faults.dockerd import PrivateDockerd
from tests.faults.load import query
from tests.support import Stack, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.docker]

RETRY = {"maxRetries": 5, "retryInterval": 2000, "backoffMultiplier": 2.0, "maxRetryInterval": 8000}
NO_RETRY = {"maxRetries": 0, "retryInterval": 100, "backoffMultiplier": 1.0}
LIMITS = {"resourceRequirements": {"timeoutSeconds": 60}}
LOST = ("ENGINE_UNREACHABLE", "CONTAINER_LOST")  # the engine took the container down with it


def sleeper(def_id: str, seconds: float, retry: dict[str, Any]) -> dict[str, Any]:
    code = f"import time\ndef main(input):\n    time.sleep({seconds})\n    return {{'slept': {seconds}}}\n"
    return {**python_def(def_id, code, **LIMITS), "retryPolicy": retry}


@pytest.fixture(scope="module")
def private_docker() -> Iterator[PrivateDockerd]:
    """A dockerd of this module only, with the sandbox images copied in; stopped and removed afterwards."""
    engine = PrivateDockerd()
    host_bridge = Path("/sys/class/net/docker0").exists()
    try:
        engine.start()
        defaults = Settings()  # type: ignore[call-arg]
        engine.load_images([defaults.sandbox_image_python, defaults.sandbox_image_shell])
        yield engine
    finally:
        engine.destroy()
        assert not engine.base.exists()
        assert not Path(f"/sys/class/net/{engine.bridge}").exists()
        # the system engine keeps its default bridge (`--bridge none` made dockerd delete it)
        assert Path("/sys/class/net/docker0").exists() == host_bridge


@pytest.fixture
def dockerd(private_docker: PrivateDockerd) -> Iterator[PrivateDockerd]:
    if not private_docker.up():  # a failed test may have left it down
        private_docker.start()
    try:
        yield private_docker
    finally:
        private_docker.close_clients()


def task_containers(api: Any, running: bool = False) -> dict[str, str]:
    """{task id: container id} of the sandbox containers given a task (labels, or a pooled one's name)."""
    from sandbox.reaper import describe, list_managed

    entries = [e for e in list_managed(api) if not running or e["State"] == "running"]
    return {i["taskId"] or i["slug"]: i["id"] for i in map(describe, entries) if i["taskId"] or i["slug"]}


def events(stack: Stack, task_id: str) -> list[dict[str, Any]]:
    return get(stack, task_id, "/events")["items"]  # type: ignore[no-any-return]


@pytest.mark.timeout(300)
def test_engine_restart_mid_run_retries_lost_attempts_and_leaves_nothing(dockerd: PrivateDockerd, stack: Stack) -> None:
    engine = dockerd.client()
    worker = stack.start_worker("automated", concurrency=4, DOCKER_HOST=dockerd.host)
    define(stack, sleeper("long", 15, RETRY))
    define(stack, sleeper("long-once", 15, NO_RETRY))
    define(stack, sleeper("short", 3, RETRY))
    began = time.monotonic()
    first = [submit(stack, d).json()["id"] for d in ("long", "long", "long-once", "short")]
    queued = [submit(stack, "short").json()["id"] for _ in range(4)]  # wait for a free slot
    wait_for(lambda: set(first) <= set(task_containers(engine.api, running=True)), 60,
             what="the first four tasks' containers running")

    down_s = dockerd.restart()  # SIGTERM, containers get 10 s, then the daemon exits; start again
    restarted = time.monotonic()
    ids = first + queued
    final = {t: wait_status(stack, t, timeout=150) for t in ids}
    settled = time.monotonic()

    long_ids, once_id = first[:2], first[2]
    for task_id in long_ids:  # killed by the engine: our fault, retried, then completed
        task = final[task_id]
        assert task["status"] == "COMPLETED" and task["output"] == {"slept": 15} and task["retryCount"] >= 1, task
        lost = [e for e in events(stack, task_id) if e["type"] == "task.instance.retry"][0]["details"]["error"]
        assert lost["code"] == "SANDBOX_ERROR" and lost["details"]["reason"] in LOST, lost
    once = final[once_id]  # the same, with no retry allowed: FAILED, and the error says why
    assert once["status"] == "FAILED" and once["error"]["code"] == "SANDBOX_ERROR", once
    assert once["error"]["details"]["reason"] in LOST and "container" in once["error"]["message"], once
    for task_id in [first[3], *queued]:
        assert final[task_id]["status"] == "COMPLETED" and final[task_id]["output"] == {"slept": 3}, final[task_id]
    retried = {t: final[t]["retryCount"] for t in ids}
    assert any(retried[t] for t in queued), "no attempt met the engine down"

    db = stack.env["DATABASE_URL"]
    for task_id in ids:  # exactly one terminal state each, none left RUNNING
        ends = query(db, "SELECT count(*) FROM task_events WHERE task_id = %s AND to_status IN "
                         "('COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT')", task_id)[0][0]
        assert ends == 1, (task_id, events(stack, task_id))
    assert not query(db, "SELECT id FROM task_instances WHERE status IN ('RUNNING', 'PENDING')")

    # the same worker process carries on: new tasks run in one attempt
    assert worker.popen.poll() is None
    after = [submit(stack, "short").json()["id"] for _ in range(4)]
    for task_id in after:
        task = wait_status(stack, task_id, timeout=60)
        assert task["status"] == "COMPLETED" and task["retryCount"] == 0, task

    def leftovers() -> list[str]:  # idle pre-started containers of the live worker are expected
        return [f"{c['Names']} {c['State']}" for c in engine.api.containers(all=True)
                if c["State"] != "running" or (c["Labels"] or {}).get("taskexec.task_id")
                or any(n.startswith("/tx.") for n in c["Names"])]

    wait_for(lambda: not leftovers(), 45, what="no container of a task left on the engine")
    worker.stop()
    wait_for(lambda: not engine.api.containers(all=True), 30, what="no container at all once the worker stopped")
    print(f"\ndocker restart: engine down {down_s:.1f}s; all {len(ids)} tasks settled {settled - restarted:.1f}s "
          f"after it ({settled - began:.1f}s in all); retries {retried}")


@pytest.mark.timeout(120)
def test_container_killed_from_outside_is_retried_not_left_running(dockerd: PrivateDockerd, stack: Stack) -> None:
    """`docker kill` of a task's container (what an engine restart does when it answers again at once):
    not a cancel anybody asked for, so the attempt is our fault and is retried."""
    engine = dockerd.client()
    stack.start_worker("automated", concurrency=2, DOCKER_HOST=dockerd.host)
    define(stack, sleeper("victim", 4, RETRY))
    task_id = submit(stack, "victim").json()["id"]
    cid = wait_for(lambda: task_containers(engine.api, running=True).get(task_id), 60, what="the task's container")
    time.sleep(1.0)  # the job is under way (it sleeps 4 s)
    engine.api.kill(cid)
    task = wait_status(stack, task_id, timeout=60)
    assert task["status"] == "COMPLETED" and task["retryCount"] == 1, task
    lost = [e for e in events(stack, task_id) if e["type"] == "task.instance.retry"][0]["details"]["error"]
    assert lost["code"] == "SANDBOX_ERROR" and lost["details"]["reason"] == "CONTAINER_LOST", lost
    wait_for(lambda: task_id not in task_containers(engine.api), 30, what="the task's containers removed")
