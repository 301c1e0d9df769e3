"""The home-made baseline of bench/e2e_latency.py: bare Celery plus ``docker run`` in a subprocess.

What a team would glue together without taskexec: a Celery task that pipes the code and input into
``docker run --rm --network=none -i IMAGE python3 -c RUNNER`` and returns the printed JSON.
Started by the benchmark as ``celery -A bench.celery_baseline worker -P threads -c 2 -Q $BENCH_CELERY_QUEUE``;
configured by BENCH_CELERY_BROKER, BENCH_CELERY_QUEUE and BENCH_IMAGE.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from celery import Celery

TASK_NAME = "bench.baseline.run_python"
# Reads {"code", "input"} on stdin, runs main(input), prints its result as JSON.
RUNNER = ("import json, sys\n"
          "job = json.load(sys.stdin)\n"
          "ns = {}\n"
          "exec(job['code'], ns)\n"
          "print(json.dumps(ns['main'](job['input'])))\n")


def make_app(broker: str, queue: str) -> Celery:
    """A Celery app on `broker` (also the result backend) whose one task is routed to `queue`."""
    app = Celery("bench_baseline", broker=broker, backend=broker)
    app.conf.update(task_default_queue=queue, task_serializer="json", result_serializer="json",
                    accept_content=["json"], result_expires=600, worker_prefetch_multiplier=1,
                    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)

    @app.task(name=TASK_NAME)
    def run_python(code: str, input: Any) -> dict[str, Any]:
        image = os.environ.get("BENCH_IMAGE", "taskexec-sandbox-python:1")
        start = time.time()
        proc = subprocess.run(["docker", "run", "--rm", "--network=none", "-i", image, "python3", "-c", RUNNER],
                              input=json.dumps({"code": code, "input": input}).encode(), capture_output=True,
                              check=True, timeout=60)
        return {"output": json.loads(proc.stdout), "startTime": start, "endTime": time.time()}

    return app


app = make_app(os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/0"),
               os.environ.get("BENCH_CELERY_QUEUE", "bench-baseline"))
