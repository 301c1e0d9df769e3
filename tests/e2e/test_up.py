"""`taskexec up` (what `make run` starts): embedded SQLite, all pools, and the printed curl line works."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import requests

from tests.support import REDIS_URL, ROOT, free_port, taskexec, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_up_prints_a_working_curl_line(tmp_path: Path) -> None:
    port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEL_") and k != "DATABASE_URL"}
    env.update({"TEL_STATE_DIR": str(tmp_path / "state"), "CELERY_BROKER_URL": REDIS_URL, "PYTHONUNBUFFERED": "1",
                "TEL_QUEUE_AUTOMATED_NAME": f"up{port}-automated", "TEL_QUEUE_MANUAL_NAME": f"up{port}-manual",
                "TEL_QUEUE_INTEGRATION_NAME": f"up{port}-integration", "TEL_FLOWER_PORT": str(flower_port),
                "TEL_METRICS_PORT": str(free_port())})
    log = tmp_path / "up.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([*taskexec("up", "--port", str(port))], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=ROOT, start_new_session=True)
    try:
        wait_for(lambda: "Ctrl-C stops everything" in log.read_text(), 90, what="taskexec up banner")
        text = log.read_text()
        token = re.search(r"admin token: (\S+)", text).group(1)  # type: ignore[union-attr]
        curl = re.search(r"(curl -s -X POST .*?)\n\s*curl -s ", text, re.S).group(1)  # type: ignore[union-attr]
        out = subprocess.run(shlex.split(curl.replace("\\\n", " ")), capture_output=True, text=True, check=True)
        task_id = json.loads(out.stdout)["id"]
        headers = {"Authorization": f"Bearer {token}"}

        def completed() -> dict | None:  # type: ignore[type-arg]
            task = requests.get(f"http://127.0.0.1:{port}/api/v1/tasks/{task_id}", headers=headers, timeout=5).json()
            return task if task["status"] in ("COMPLETED", "FAILED", "TIMED_OUT") else None

        task = wait_for(completed, 60, what="sample task finished")
        assert task["status"] == "COMPLETED", task
        assert task["output"] == {"greeting": "Hello, world!"}
        assert (tmp_path / "state" / "taskexec.sqlite").exists()
        # the operator's views work on the embedded database too
        stats = requests.get(f"http://127.0.0.1:{port}/api/v1/stats/overview?window=1h", headers=headers, timeout=10)
        assert stats.status_code == 200, stats.text
        assert stats.json()["totals"]["byStatus"].get("COMPLETED") == 1, stats.json()["totals"]
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert "taskexec_tasks_finished_total" in metrics
        assert requests.get(f"http://127.0.0.1:{port}/dashboard", timeout=10).status_code == 200
        # Flower, started as compose starts it (no app loaded), sees the three pools and the task
        password = re.search(r"flower: .*password (\S+)\)", text).group(1)  # type: ignore[union-attr]
        flower = f"http://127.0.0.1:{flower_port}"
        assert requests.get(f"{flower}/api/workers", timeout=10).status_code == 401  # auth even on loopback

        def pools() -> set[str]:
            r = requests.get(f"{flower}/api/workers?refresh=1", auth=("admin", password), timeout=20)
            return {name.split("@")[0] for name in r.json()} if r.status_code == 200 else set()

        assert wait_for(lambda: pools() >= {"automated", "manual", "integration"}, 60, what="Flower lists the pools")
        seen = requests.get(f"{flower}/api/tasks", auth=("admin", password), timeout=10).json()
        assert any(t["args"] and task_id in t["args"] for t in seen.values()), "Flower saw the sample task run"
    finally:
        os.killpg(proc.pid, 2)  # Ctrl-C
        proc.wait(timeout=40)
    assert proc.returncode == 0, log.read_text()[-3000:]
