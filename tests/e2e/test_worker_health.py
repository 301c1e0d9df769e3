"""A worker's probes on its metrics port, with real processes: `/health` and `/ready` answer 200 once
the worker is up (and `/metrics` still works); after SIGTERM, while a task still runs, `/ready` turns
503 before the process exits (Kubernetes stops counting a draining pod as available)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Any

import pytest
import requests

from tests.e2e.helpers import define, python_def, submit, wait_status
from tests.support import Stack, free_port, wait_for
from workers import health

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SLOW = "import time\ndef main(input):\n    time.sleep(4)\n    return {'done': True}\n"


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    r = requests.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    assert r.headers["Content-Type"] == "application/json", r.text[:300]
    return r.status_code, r.json()


def test_probes_answer_200_when_the_worker_is_up(stack: Stack) -> None:
    port = free_port()
    stack.start_worker("manual", TEL_METRICS_PORT=str(port))
    wait_for(lambda: probe(port, "/ready")[0] == 200, 10, what="manual worker ready")
    status, body = probe(port, "/health")
    assert status == 200 and body["status"] == "UP" and body["consumer"] == "running", body
    time.sleep(health.HEARTBEAT_INTERVAL_S + 0.5)  # the consumer's timer keeps stamping, not only at connect
    assert probe(port, "/health")[1]["heartbeatAgeSeconds"] < health.HEARTBEAT_INTERVAL_S + 0.4
    status, body = probe(port, "/ready")
    assert (status, body["status"]) == (200, "UP"), body
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert metrics.status_code == 200 and metrics.headers["Content-Type"].startswith("text/plain")
    assert f'celery_worker_up{{hostname="{socket.gethostname()}"}} 1.0' in metrics.text


def test_ready_turns_503_on_sigterm_while_a_task_runs(stack: Stack) -> None:
    port = free_port()
    worker = stack.start_worker("automated", concurrency=1, TEL_METRICS_PORT=str(port))
    wait_for(lambda: probe(port, "/ready")[0] == 200, 10, what="automated worker ready")
    define(stack, python_def("health-slow", SLOW, resourceRequirements={"timeoutSeconds": 30}))
    task = submit(stack, "health-slow").json()["id"]
    wait_status(stack, task, {"RUNNING"}, timeout=30)

    os.killpg(worker.popen.pid, signal.SIGTERM)  # warm shutdown: the running task finishes first
    status, body = wait_for(lambda: (s := probe(port, "/ready"))[0] == 503 and s, 3, interval=0.05,
                            what="/ready 503 after SIGTERM")
    assert worker.popen.poll() is None, "503 must come while the worker is still draining"
    assert body == {**body, "status": "DOWN", "reason": "shutting down"}, body
    assert probe(port, "/health")[1]["reason"] == "shutting down"
    assert wait_status(stack, task, {"RUNNING"}, timeout=1)["status"] == "RUNNING"  # still draining

    assert wait_status(stack, task, timeout=30)["status"] == "COMPLETED"
    try:
        assert worker.popen.wait(timeout=20) == 0, worker.text()[-3000:]
    except subprocess.TimeoutExpired:
        pytest.fail("the worker did not exit after its task finished:\n" + worker.text()[-3000:])
