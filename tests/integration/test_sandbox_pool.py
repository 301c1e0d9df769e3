"""Integration tests of the pre-started container pool (real Docker)."""

from __future__ import annotations

import threading
import time
import uuid

import docker
import pytest

from sandbox import DockerRunner, Limits, RunSpec, build_images
from sandbox import containers as c
from sandbox import reaper as reaper_mod

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def client(docker_client: docker.DockerClient) -> docker.DockerClient:
    build_images(log=lambda _m: None)
    return docker_client


def mine(client: docker.DockerClient, worker: str) -> list:
    return client.containers.list(all=True, sparse=True, filters={"label": ["taskexec.managed=1",
                                                               f"taskexec.worker_id={worker}"]})


def wait_idle(runner: DockerRunner, n: int, timeout: float = 20) -> None:
    runner.drain()  # the used container's removal runs in the background
    end = time.monotonic() + timeout
    while runner.pool.idle_count() < n and time.monotonic() < end:
        time.sleep(0.05)
    assert runner.pool.idle_count() >= n


@pytest.fixture
def worker() -> str:
    return f"pool-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def runner(client: docker.DockerClient, worker: str):
    r = DockerRunner(pool_size=2)
    yield r
    r.close()
    assert not mine(client, worker), "pool containers left after close()"


def spec(worker: str, code: str = "def main(i):\n    return i\n", **kw) -> RunSpec:
    return RunSpec(task_id=kw.pop("task_id", uuid.uuid4().hex), attempt=1, runtime="python", code=code,
                   input=kw.pop("input", 7), worker_id=worker, **kw)


def test_pool_runs_once_and_refills(runner: DockerRunner, client: docker.DockerClient, worker: str) -> None:
    assert runner.run(spec(worker)).output == 7  # cold start registers the key
    wait_idle(runner, 2)
    idle = mine(client, worker)
    assert len(idle) == 2
    for cont in idle:
        labels = cont.attrs["Labels"]  # sparse listing: labels sit at the top level
        assert labels[c.LABEL_TASK] == "" and labels[c.LABEL_POOL] == "1"
    ids = {x.id for x in idle}
    res = runner.run(spec(worker, input={"a": 1}))
    assert res.ok and res.output == {"a": 1}
    assert res.container_id in ids  # served from the pool
    runner.drain()
    wait_idle(runner, 2)
    assert res.container_id not in {x.id for x in mine(client, worker)}  # never reused


def test_pool_isolation_between_tasks(runner: DockerRunner, worker: str) -> None:
    runner.run(spec(worker))
    wait_idle(runner, 2)
    first = runner.run(spec(worker, "open('/tmp/leak', 'w').write('secret')\n", env={"TASK_ID": "a"}))
    assert first.ok
    wait_idle(runner, 2)
    second = runner.run(spec(worker, "import os\ndef main(i):\n    return [os.path.exists('/tmp/leak'), "
                                     "os.environ.get('TASK_ID')]\n", env={"TASK_ID": "b"}))
    assert second.output == [False, "b"]


def test_pool_limits_still_apply(runner: DockerRunner, worker: str) -> None:
    lim = Limits(memory_bytes=64 * 2**20, timeout_s=2)
    runner.run(spec(worker, limits=lim))
    wait_idle(runner, 2)
    assert runner.run(spec(worker, "while True:\n    pass\n", limits=lim)).error_code == "TIME_LIMIT_EXCEEDED"
    wait_idle(runner, 1)
    res = runner.run(spec(worker, "x = b'x' * (200 * 2**20)\n", limits=lim))
    assert res.error_code == "MEMORY_LIMIT_EXCEEDED"


def test_kill_task_finds_pooled_container(runner: DockerRunner, worker: str) -> None:
    runner.run(spec(worker))
    wait_idle(runner, 2)
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("r", runner.run(
        spec(worker, "import time\ntime.sleep(60)\n", task_id="pooled-kill-me"))))
    t.start()
    time.sleep(1.0)
    other = DockerRunner(pool_size=0)  # another process's view: labels and names only
    assert other.kill_task("pooled-kill-me") == 1
    t.join(timeout=5)
    assert out["r"].error_code == "CANCELLED"


def test_reaper_and_idle_pool(runner: DockerRunner, client: docker.DockerClient, worker: str) -> None:
    runner.run(spec(worker))
    wait_idle(runner, 2)
    scope = {"taskexec.worker_id": worker}
    assert reaper_mod.reap(runner.api, live_worker_ids={worker}, labels=scope) == []
    assert len(mine(client, worker)) == 2
    gone = reaper_mod.reap(runner.api, live_worker_ids={"someone-else"}, labels=scope)
    assert [g["reason"] for g in gone] == ["worker_gone", "worker_gone"]
    assert all(g["idlePool"] for g in gone)
    runner.pool.size = 0  # do not refill during teardown


def test_used_pooled_container_deadline_from_name(runner: DockerRunner, client: docker.DockerClient,
                                                   worker: str) -> None:
    runner.run(spec(worker))
    wait_idle(runner, 2)
    t = threading.Thread(target=lambda: runner.run(
        spec(worker, "import time\ntime.sleep(60)\n", task_id="pooled-deadline",
             limits=Limits(timeout_s=60))))
    t.start()
    time.sleep(1.0)
    scope = {"taskexec.worker_id": worker}
    assert reaper_mod.reap(runner.api, labels=scope, now=time.time() + 30) == []
    gone = reaper_mod.reap(runner.api, labels=scope, now=time.time() + 60 + 31)
    assert [(g["taskId"], g["reason"]) for g in gone] == [("pooled-deadline", "deadline")]
    t.join(timeout=5)
