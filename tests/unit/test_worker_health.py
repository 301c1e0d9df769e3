"""The worker probes' logic (workers/health.py), the HTTP dispatch next to /metrics, and the
container health check's file mode (scripts/healthcheck.py) used for the scheduler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from taskexec.observability.metrics_export import metrics_app, serve
from tests.support import ROOT, free_port
from workers import health


def call(app: Any, path: str) -> tuple[str, dict[str, str], bytes]:
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        got.update(status=status, headers=dict(headers))

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""}, start_response))
    return got["status"], got["headers"], body


def test_states_of_liveness_and_readiness(monkeypatch: pytest.MonkeyPatch) -> None:
    state = health.HealthState(stale_after_s=5)
    assert state.liveness()[0] == 200 and state.liveness()[1]["consumer"] == "connecting"
    assert state.readiness() == (503, {"status": "DOWN", "reason": "starting", "heartbeatAgeSeconds": None,
                                       "consumer": "connecting"})
    state.set_connected(True)
    assert state.readiness()[1]["reason"] == "starting"  # connected, but worker_ready not yet fired
    state.ready = True
    assert state.readiness()[0] == 200 and state.liveness()[0] == 200

    now = time.monotonic()
    monkeypatch.setattr(health.time, "monotonic", lambda: now + 6)  # the consumer loop stopped turning
    assert state.liveness()[0] == 503 and state.liveness()[1]["reason"] == "consumer heartbeat stale"
    assert state.readiness()[1]["reason"] == "consumer heartbeat stale"
    state.beat()
    assert state.liveness()[0] == 200

    state.set_connected(False)  # broker lost: alive (reconnecting), not ready
    monkeypatch.setattr(health.time, "monotonic", lambda: now + 100)
    assert state.liveness()[0] == 200
    assert state.readiness()[1]["reason"] == "broker disconnected"

    state.stopping = True
    assert state.liveness()[1]["reason"] == "shutting down" and state.readiness()[0] == 503


def test_dispatch_keeps_metrics_and_adds_the_probes() -> None:
    state = health.HealthState()
    app = metrics_app(health.routes(state))
    status, headers, body = call(app, "/ready")
    assert status.startswith("503") and headers["Content-Type"] == "application/json"
    assert json.loads(body)["reason"] == "starting"
    status, headers, body = call(app, "/metrics")
    assert status.startswith("200") and headers["Content-Type"].startswith("text/plain")
    assert b"python_info" in body or b"process_" in body or b"# HELP" in body


def test_served_over_http() -> None:
    state = health.HealthState()
    state.set_connected(True)
    state.ready = True
    port = free_port()
    assert serve(port, addr="127.0.0.1", routes=health.routes(state))
    base = f"http://127.0.0.1:{port}"
    assert requests.get(base + "/health", timeout=5).json()["status"] == "UP"
    assert requests.get(base + "/ready", timeout=5).status_code == 200
    assert "# HELP" in requests.get(base + "/metrics", timeout=5).text
    assert not serve(port, addr="127.0.0.1"), "a taken port is reported, not raised"


def run_check(**env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TEL_HEALTHCHECK")}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "healthcheck.py")], env={**clean, **env},
                          capture_output=True, timeout=30).returncode


def test_healthcheck_file_mode(tmp_path: Path) -> None:
    pattern = str(tmp_path / "celerybeat-schedule*")
    assert run_check(TEL_HEALTHCHECK_FILE=pattern) == 1  # nothing written yet
    (tmp_path / "celerybeat-schedule.db").write_bytes(b"x")
    assert run_check(TEL_HEALTHCHECK_FILE=pattern, TEL_HEALTHCHECK_URL="none") == 0
    old = time.time() - 700
    os.utime(tmp_path / "celerybeat-schedule.db", (old, old))
    assert run_check(TEL_HEALTHCHECK_FILE=pattern) == 1
    assert run_check(TEL_HEALTHCHECK_FILE=pattern, TEL_HEALTHCHECK_MAX_AGE="800") == 0
    assert run_check(TEL_HEALTHCHECK_URL="none") == 0
