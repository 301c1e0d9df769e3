"""The broker (a private Redis with AOF persistence) restarted while 200 integration tasks are under way.

Router and integration workers are real processes on the private Redis; they are not restarted. Every
accepted task must end COMPLETED in one attempt with one call to the target, and the orchestrator
receiver must get every event once (after dropping duplicates by id), in order per task.

Three ways down: `SHUTDOWN` (Redis flushes its AOF), and `kill -9` twice: with the fsync policy compose.yaml
ships (read from it: `--appendonly yes` and Redis's default, `appendfsync everysec`), and with `always`.
With `everysec` a crash may lose the last second or so of writes (docs/operations.md, "Redis as the
broker"): a message the router published (the task stays PENDING and the router's dispatcher publishes
it again once it has been queued longer than the visibility timeout), a fetch (the message comes back
and the router refuses it: its attempt is running or done), an acknowledgement (likewise). Every task
must still end COMPLETED in one attempt with one call to the target.
A crash can also strand a message a worker had just fetched: it is in kombu's unacked set, the worker
dropped it on reconnecting, and kombu hands it out again only after the visibility timeout, at its next
sweep (every ~100 s). The router publishes a task again when it has been PENDING on the broker longer
than the visibility timeout (15 s here), so it is done well before that.

A third case keeps Redis up and drops every client connection (`CLIENT KILL`) while calls are in flight:
the workers' kombu channels then put the messages of their running tasks back on the queue at once
("Restoring N unacknowledged message(s)"), and another thread receives them while the first still
runs. The router must refuse those duplicates (the attempt is within its deadline).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml

from tests.e2e.helpers import define
from tests.faults.load import NO_RETRY, CountingTarget, assert_ran_once, delivered_in_order, submit_many, wait_terminal
from tests.faults.services import RedisServer
from tests.integration_support import http_def, start_pool
from tests.support import ROOT, Receiver, Stack, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TASKS = 200
DOWN_S = 3.0


def shipped_appendfsync() -> str:
    """The fsync policy of the Redis compose.yaml ships (Redis's default, everysec, unless its command sets one)."""
    command = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes", command  # persistence on: what this test assumes
    return str(command[command.index("--appendfsync") + 1]) if "--appendfsync" in command else "everysec"


@pytest.fixture
def env(env: dict[str, str], private_redis: RedisServer) -> dict[str, str]:
    """The stack's broker and integration state on the private Redis; no rate limit in the way; a visibility
    timeout of 15 s (10 s longest task + 5 s) instead of an hour, so what the crash stranded comes back soon."""
    return {**env, "CELERY_BROKER_URL": private_redis.url, "TEL_REDIS_URL": private_redis.url,
            "TEL_RATE_LIMIT_DEFAULT": "100000/min", "TEL_EXECUTOR_MAX_TIMEOUT": "10", "TEL_VISIBILITY_MARGIN": "5"}


@pytest.fixture
def target() -> Iterator[CountingTarget]:
    t = CountingTarget(delay=0.2)
    yield t
    t.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("private_redis", "hard"), [("everysec", False), (shipped_appendfsync(), True),
                                                    ("always", True)],
                         ids=["shutdown", "kill-9-shipped", "kill-9-always"], indirect=["private_redis"])
def test_redis_restarted_mid_load_loses_nothing_and_runs_nothing_twice(
        private_redis: RedisServer, hard: bool, stack: Stack, receiver: Receiver, target: CountingTarget) -> None:
    workers = [start_pool(stack, name=f"integration-{n}", concurrency=3) for n in ("a", "b")]
    router = stack.procs["router"]
    define(stack, http_def("work", target.url, retry=NO_RETRY))

    results: list[tuple[int, dict[str, Any]]] = []
    submitter = threading.Thread(target=lambda: results.extend(submit_many(stack.url, "work", TASKS, threads=4)))
    started = time.monotonic()
    submitter.start()
    wait_for(lambda: target.total() >= 40, 90, what="40 calls before the restart")
    calls_before = target.total()
    private_redis.restart(hard=hard, down_for=DOWN_S)
    restarted_at = time.monotonic()
    submitter.join(120)
    assert not submitter.is_alive(), "submissions hung"

    assert [s for s, _ in results] == [201] * TASKS, [b for s, b in results if s != 201][:3]
    ids = [b["id"] for _, b in results]
    assert calls_before < TASKS, "the restart did not happen mid-load"
    db = stack.env["DATABASE_URL"]
    wait_terminal(db, ids, timeout=150)
    finished_at = time.monotonic()
    assert_ran_once(db, ids, target)
    wait_for(lambda: len({e["id"] for e in receiver.received}) >= 3 * TASKS, 60, what="every event delivered")
    delivered = delivered_in_order(receiver, db, ids)
    assert all(types == ["task.instance.created", "task.instance.started", "task.instance.completed"]
               for types in delivered.values())

    # nobody was restarted: the same router and worker processes reconnected on their own
    assert router.popen.poll() is None and all(w.popen.poll() is None for w in workers)
    assert requests.get(stack.url + "/ready", timeout=10).status_code == 200
    assert any("Connection to broker lost" in w.text() or "Cannot connect to" in w.text() for w in workers), \
        "the workers never noticed the broker going away"
    again = router.text().count("published again")
    print(f"\n{'kill -9' if hard else 'SHUTDOWN'} ({private_redis.appendfsync}): {calls_before} calls before the "
          f"restart; all {TASKS} done "
          f"{finished_at - restarted_at:.1f}s after it ({finished_at - started:.1f}s in all); "
          f"republish passes: {again}")


@pytest.mark.timeout(240)
def test_broker_connections_dropped_while_calls_run_nothing_runs_twice(
        private_redis: RedisServer, stack: Stack, receiver: Receiver) -> None:
    # Four long calls on six threads: the messages Celery puts back are fetched by the idle threads at once,
    # while the calls they belong to still run.
    target = CountingTarget(delay=4.0)
    try:
        workers = [start_pool(stack, name=f"integration-{n}", concurrency=3) for n in ("a", "b")]
        define(stack, http_def("slow-work", target.url, retry=NO_RETRY))
        results = submit_many(stack.url, "slow-work", 4, threads=4)
        assert [s for s, _ in results] == [201] * 4, results
        ids = [b["id"] for _, b in results]
        wait_for(lambda: target.in_flight == 4, 30, interval=0.05, what="all four calls in flight")
        with private_redis.client() as admin:
            dropped: int = admin.client_kill_filter(_type="normal", skipme=True)  # type: ignore[assignment]
        assert dropped >= 4, dropped
        db = stack.env["DATABASE_URL"]
        wait_terminal(db, ids, timeout=60)
        assert_ran_once(db, ids, target)
        logs = "".join(w.text() for w in workers)
        restored = logs.count("unacknowledged message(s)")
        refused = logs.count("(duplicate delivery)")
        assert restored >= 1 and refused >= 1, (restored, refused)  # the case really happened and was caught
        wait_for(lambda: len({e["id"] for e in receiver.received}) >= 3 * len(ids), 30, what="every event")
        delivered = delivered_in_order(receiver, db, ids)
        assert all(types == ["task.instance.created", "task.instance.started", "task.instance.completed"]
                   for types in delivered.values())
        assert all(w.popen.poll() is None for w in workers)
        print(f"\nconnections dropped: {dropped}; {refused} duplicate deliveries refused, none ran twice")
    finally:
        target.close()


def test_a_message_the_broker_lost_is_published_again(
        private_redis: RedisServer, stack: Stack, receiver: Receiver, target: CountingTarget) -> None:
    """What a crash with `appendfsync everysec` can do, done by hand: the queued message disappears."""
    define(stack, http_def("work", target.url, retry=NO_RETRY))
    ids = [b["id"] for _, b in submit_many(stack.url, "work", 3, threads=1)]
    queue = stack.env["TEL_QUEUE_INTEGRATION_NAME"]
    wait_for(lambda: private_redis.queued(queue) == 3, 10, what="three messages on the broker")
    lost_at = time.monotonic()
    assert private_redis.drop_queue(queue) >= 1 and private_redis.queued(queue) == 0
    start_pool(stack, name="integration", concurrency=2)
    db = stack.env["DATABASE_URL"]
    wait_terminal(db, ids, timeout=60)
    assert time.monotonic() - lost_at >= 10, "done before the visibility timeout: the message was not lost?"
    assert_ran_once(db, ids, target)
    assert "published again" in stack.procs["router"].text()
