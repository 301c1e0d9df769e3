"""Celery's own tools against the pools under load, on Redis and on RabbitMQ: a stock Flower and the stock
`celery` command line (neither loads our app: `--broker=URL` only, as compose.yaml starts Flower).

Each broker is private to the test (a redis-server of its own; a RabbitMQ virtual host of its own), so
every node that answers a broadcast is one of this test's pools. While integration tasks run, the test
starts Flower, runs every `inspect` command, resizes a pool, cancels and adds a consumer, reads the queue
length Flower shows for a backlog of known size, and shuts one pool down by remote control. Every
task must still complete exactly once, and no pool may log a failed control command.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.e2e.helpers import define, python_def, submit, wait_status
from tests.faults.load import CountingTarget, assert_ran_once, submit_many, wait_terminal
from tests.faults.services import RedisServer
from tests.integration_support import http_def, start_pool
from tests.support import AMQP_URL, REDIS_URL, Proc, Stack, free_port, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.docker]

MGMT = "http://127.0.0.1:15672/api"  # RabbitMQ's management API (scripts/services.sh enables it)
GUEST = ("guest", "guest")
SLOW = "import time\ndef main(input):\n    time.sleep(6)\n    return {'ok': True}\n"
INSPECT = ("ping", "active", "reserved", "active_queues", "stats", "registered")


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A broker URL nobody else uses: a private redis-server, or a fresh RabbitMQ virtual host."""
    if request.param == "redis":
        server = RedisServer(tmp_path)
        server.start()
        yield server.url
        server.stop()
        return
    vhost = "tel-" + uuid.uuid4().hex[:10]
    assert requests.put(f"{MGMT}/vhosts/{vhost}", auth=GUEST, timeout=10).status_code in (201, 204)
    perms = {"configure": ".*", "write": ".*", "read": ".*"}
    assert requests.put(f"{MGMT}/permissions/{vhost}/guest", json=perms, auth=GUEST, timeout=10).ok
    yield f"amqp://{urlsplit(AMQP_URL).netloc}/{vhost}"
    requests.delete(f"{MGMT}/vhosts/{vhost}", auth=GUEST, timeout=10)


@pytest.fixture
def env(env: dict[str, str], broker: str) -> dict[str, str]:
    # Breaker and rate-limit state of the integration pool stay on Redis whatever the broker.
    return {**env, "CELERY_BROKER_URL": broker, "TEL_REDIS_URL": broker if broker.startswith("redis") else REDIS_URL,
            "TEL_RATE_LIMIT_DEFAULT": "100000/min"}


def celery(broker: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The stock `celery` command: no `-A`, only the broker URL."""
    return subprocess.run([sys.executable, "-m", "celery", f"--broker={broker}", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def inspect(broker: str, command: str, *args: str) -> dict[str, Any]:
    r = celery(broker, "inspect", command, *args, "--json", "--timeout", "5")
    assert r.returncode == 0, (command, r.stdout, r.stderr)
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def nodes_by_pool(replies: dict[str, Any]) -> dict[str, str]:
    return {pool: node for node in replies for pool in ("automated", "manual", "integration")
            if node.split("@")[0].startswith(pool)}


def start_flower(broker: str, port: int, logdir: Path, password: str) -> Proc:
    cmd = [sys.executable, "-m", "celery", f"--broker={broker}", "flower", "--address=127.0.0.1", f"--port={port}"]
    if broker.startswith("amqp"):  # queue lengths come from the management API (Flower would guess port 5672)
        cmd.append("--broker_api=http://guest:guest@127.0.0.1:15672/api/")
    proc = Proc(cmd, {**_base_env(), "FLOWER_BASIC_AUTH": f"admin:{password}"}, logdir / "flower.log")
    wait_for(lambda: _flower_up(port), 30, what="flower answering")
    return proc


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("TEL_", "CELERY_", "DATABASE_URL"))}


def _flower_up(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthcheck", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.timeout(420)
def test_stock_flower_and_celery_commands_leave_every_task_completing(
        broker: str, stack: Stack, tmp_path: Path) -> None:
    target = CountingTarget(delay=0.1)
    try:
        _drive_the_tools(broker, stack, tmp_path, target)
    finally:
        target.close()


def _drive_the_tools(broker: str, stack: Stack, tmp_path: Path, target: CountingTarget) -> None:
    start_pool(stack, concurrency=3)
    stack.start_worker("automated", concurrency=1)
    stack.start_worker("manual", concurrency=1)
    define(stack, http_def("work", target.url))
    define(stack, python_def("slow", SLOW, resourceRequirements={"timeoutSeconds": 30}))

    results: list[tuple[int, dict[str, Any]]] = []
    load = threading.Thread(target=lambda: results.extend(submit_many(stack.url, "work", 60, threads=2,
                                                                        pace=0.1)))
    load.start()
    wait_for(lambda: target.total() >= 10, 60, what="integration load under way")

    # 1. Flower, started exactly as compose.yaml starts it, sees the three pools
    password = uuid.uuid4().hex
    port = free_port()
    stack.procs["flower"] = start_flower(broker, port, tmp_path, password)
    flower, auth = f"http://127.0.0.1:{port}", ("admin", password)

    def flower_pools() -> dict[str, str]:
        r = requests.get(f"{flower}/api/workers?refresh=1", auth=auth, timeout=30)
        return nodes_by_pool(r.json()) if r.status_code == 200 else {}

    assert set(wait_for(lambda: len(flower_pools()) == 3 and flower_pools(), 60, what="flower lists the pools"))

    # 2. every stock inspect command answers for every pool
    nodes = nodes_by_pool(inspect(broker, "ping"))
    assert set(nodes) == {"automated", "manual", "integration"}, nodes
    for command in INSPECT:
        replies = inspect(broker, command)
        assert set(nodes.values()) <= set(replies), (command, replies)
    registered = inspect(broker, "registered", "-d", nodes["automated"])[nodes["automated"]]
    assert "taskexec.execute.automated" in registered

    # 3. a backlog of known size: Flower's queue length is the broker's own count (all priority lists)
    queue = stack.env["TEL_QUEUE_AUTOMATED_NAME"]
    slow = [submit(stack, "slow", {"n": i}, priority=p).json()["id"]
            for i, p in enumerate(["LOW", "HIGH", "CRITICAL", "MEDIUM"])]
    running = wait_for(lambda: [t for t in slow if wait_status(stack, t, {"RUNNING", "PENDING"})["status"]
                                == "RUNNING"], 60, what="a slow task running")
    assert len(running) == 1  # concurrency 1: three wait on the broker
    # RabbitMQ counts the running task's unacknowledged message in its queue; Redis keeps it apart
    expected = 3 if broker.startswith("redis") else 4

    def flower_length() -> int | None:
        r = requests.get(f"{flower}/api/queues/length", auth=auth, timeout=10)
        lengths = {q["name"]: q["messages"] for q in r.json()["active_queues"]} if r.ok else {}
        return lengths.get(queue)

    assert wait_for(lambda: flower_length() == expected, 30, what=f"flower shows {expected} on {queue}")

    # 4. resize the automated pool by remote control; the backlog drains in parallel
    grow = celery(broker, "control", "pool_grow", "2", "-d", nodes["automated"])
    assert grow.returncode == 0 and "pool will grow" in grow.stdout, grow.stdout + grow.stderr
    stats = inspect(broker, "stats", "-d", nodes["automated"])[nodes["automated"]]
    assert stats["pool"]["max-concurrency"] == 3 and stats["prefetch_count"] == 3, stats["pool"]

    # 5. cancel and add a consumer: the pool stops and resumes taking its queue
    iqueue = stack.env["TEL_QUEUE_INTEGRATION_NAME"]
    cancel = celery(broker, "control", "cancel_consumer", iqueue, "-d", nodes["integration"])
    assert cancel.returncode == 0 and "no longer consuming" in cancel.stdout, cancel.stdout + cancel.stderr
    queues = inspect(broker, "active_queues", "-d", nodes["integration"])[nodes["integration"]]
    assert iqueue not in [q["name"] for q in queues]
    add = celery(broker, "control", "add_consumer", iqueue, "-d", nodes["integration"])
    assert add.returncode == 0 and "add consumer" in add.stdout, add.stdout + add.stderr

    load.join(180)
    assert not load.is_alive()
    assert [s for s, _ in results] == [201] * 60, [b for s, b in results if s != 201][:3]
    ids = [b["id"] for _, b in results]
    wait_terminal(stack.env["DATABASE_URL"], ids + slow, timeout=180)
    assert_ran_once(stack.env["DATABASE_URL"], ids, target)
    assert all(wait_status(stack, t)["status"] == "COMPLETED" for t in slow)

    # 6. Flower saw the tasks run; shutdown by remote control stops the manual pool cleanly
    seen = requests.get(f"{flower}/api/tasks?limit=1000", auth=auth, timeout=10).json()
    assert {t for t in slow} <= {json.loads(x["args"].replace("'", '"'))[0] for x in seen.values() if x.get("args")}
    celery(broker, "control", "shutdown", "-d", nodes["manual"])  # a shutdown sends no reply (Celery's design)
    manual = stack.procs["manual"].popen
    manual.wait(timeout=60)
    assert manual.returncode == 0
    for name in ("automated", "integration"):
        log = stack.procs[name].text()
        assert "control command failed" not in log and "Control command error" not in log, name
