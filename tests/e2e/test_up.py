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
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEL_") and k != "DATABASE_URL"}
    env.update({"TEL_STATE_DIR": str(tmp_path / "state"), "CELERY_BROKER_URL": REDIS_URL, "PYTHONUNBUFFERED": "1",
                "TEL_QUEUE_AUTOMATED_NAME": f"up{port}-automated", "TEL_QUEUE_MANUAL_NAME": f"up{port}-manual",
                "TEL_QUEUE_INTEGRATION_NAME": f"up{port}-integration"})
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
        # the printed command-line lines work as printed (the README's first task)
        exports = re.search(r"export (TEL_API_URL=\S+) (TEL_API_TOKEN=\S+)", text)
        assert exports, text
        cli_env = {**env, **dict(pair.split("=", 1) for pair in exports.groups())}
        submit = re.search(r"\n\s*(\S+ submit hello-python .*)\n", text).group(1)  # type: ignore[union-attr]
        sent = subprocess.run(shlex.split(submit), env=cli_env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0 and sent.stdout.startswith("submitted "), (sent.stdout, sent.stderr)
        wait = re.search(r"\n\s*(\S+ wait) <id>\n", text).group(1)  # type: ignore[union-attr]
        done = subprocess.run([*shlex.split(wait), sent.stdout.split()[1]], env=cli_env, cwd=ROOT,
                              capture_output=True, text=True, timeout=90)
        assert done.returncode == 0 and "COMPLETED" in done.stdout and "Hello, world!" in done.stdout, done
    finally:
        os.killpg(proc.pid, 2)  # Ctrl-C
        proc.wait(timeout=40)
    assert proc.returncode == 0, log.read_text()[-3000:]
