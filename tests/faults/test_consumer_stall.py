"""A consumer stalled on purpose: its pool must fail `/health` and `/ready` so that it gets replaced.

The test drops (iptables, on loopback only) the packets the pool sends on the one broker connection
that carries its BRPOP. The pool's event loop keeps turning and its heartbeat stays fresh, so the
heartbeat check sees nothing; only the stall watchdog, which compares the queue's backlog with the
pool's free slots over a connection of its own, can tell. When the rule goes, TCP retransmits, the
pool takes the backlog, and it turns healthy again. The broker is a private redis-server.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import redis
import requests

from tests.e2e.helpers import define, submit
from tests.faults.load import CountingTarget, wait_terminal
from tests.faults.services import RedisServer
from tests.integration_support import http_def, start_pool
from tests.support import Stack, free_port, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.fixture
def env(env: dict[str, str], private_redis: RedisServer) -> dict[str, str]:
    return {**env, "CELERY_BROKER_URL": private_redis.url, "TEL_REDIS_URL": private_redis.url}


def brpop_port(client: redis.Redis) -> int | None:
    """The client-side port of the connection a pool's BRPOP is waiting on."""
    for c in client.client_list():  # type: ignore[union-attr]
        if c.get("cmd") == "brpop":
            return int(str(c["addr"]).rsplit(":", 1)[1])
    return None


@pytest.mark.timeout(240)
def test_a_stalled_consumer_fails_health_and_readiness(private_redis: RedisServer, stack: Stack) -> None:
    port = free_port()
    start_pool(stack, concurrency=2, TEL_METRICS_PORT=str(port), TEL_HEALTH_STALL_SECONDS="5")
    health = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(f"{health}/ready", timeout=2).status_code == 200, 30, what="pool ready")
    with private_redis.client() as admin:
        client_port = wait_for(lambda: brpop_port(admin), 20, what="the pool's BRPOP connection")
    rule = ["OUTPUT", "-o", "lo", "-p", "tcp", "--sport", str(client_port), "--dport", str(private_redis.port),
            "-j", "DROP"]
    target = CountingTarget(delay=0.0)
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        define(stack, http_def("work", target.url))
        ids = [submit(stack, "work", {"n": i}).json()["id"] for i in range(5)]

        def down() -> dict[str, Any] | None:
            r = requests.get(f"{health}/health", timeout=2)
            return r.json() if r.status_code == 503 else None

        body = wait_for(down, 60, what="the stalled pool's /health turning 503")
        assert body["reason"].startswith("consumer stalled"), body
        assert body["heartbeatAgeSeconds"] < 5, body  # the loop turns: the heartbeat alone saw nothing
        ready = requests.get(f"{health}/ready", timeout=2)
        assert ready.status_code == 503 and ready.json()["reason"].startswith("consumer stalled")
        gauge = [line for line in requests.get(f"{health}/metrics", timeout=2).text.splitlines()
                 if line.startswith("taskexec_worker_consumer_stalled{")]
        assert gauge and gauge[0].endswith(" 1.0"), gauge
        assert target.total() <= 1  # only what the BRPOP already at the broker before the rule could fetch
    finally:
        subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True)
    try:
        # the connection heals (TCP retransmits): the pool takes the backlog and turns healthy again
        wait_terminal(stack.env["DATABASE_URL"], ids, timeout=150)
        wait_for(lambda: requests.get(f"{health}/health", timeout=2).status_code == 200, 30, what="healthy again")
        assert target.total() == len(ids)
    finally:
        target.close()
