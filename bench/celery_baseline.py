"""The home-made baseline of bench/e2e_latency.py: bare Celery running the sandbox's harness through the
Docker SDK, with the same hardening, and nothing else of taskexec.

What a team would glue together without taskexec, given the same reliability settings: a Celery task
(late ack, reject on a lost worker, prefetch 1, Redis broker and result backend) that runs the code in a
hardened single-use container (`bench.docker_baseline.SdkRunner`: same flags, same harness) and returns
its output; the container is removed in the background after the answer, as taskexec's runner does.
Started by the benchmark as ``celery -A bench.celery_baseline worker -P prefork -c 2 -Q $BENCH_CELERY_QUEUE``;
configured by BENCH_CELERY_BROKER, BENCH_CELERY_QUEUE and BENCH_IMAGE.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

TASK_NAME = "bench.baseline.run_python"


def make_app(broker: str, queue: str) -> Celery:
    """A Celery app on `broker` (also the result backend) whose one task is routed to `queue`."""
    app = Celery("bench_baseline", broker=broker, backend=broker)
    app.conf.update(task_default_queue=queue, task_serializer="json", result_serializer="json",
                    accept_content=["json"], result_expires=600, worker_prefetch_multiplier=1,
                    task_acks_late=True, task_reject_on_worker_lost=True,
                    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
    runner: list[Any] = []

    @app.task(name=TASK_NAME)
    def run_python(code: str, input: Any) -> dict[str, Any]:
        if not runner:  # one per worker process (prefork children do not share the parent's client)
            import docker

            from bench.docker_baseline import SdkRunner

            image = os.environ.get("BENCH_IMAGE", "taskexec-sandbox-python:1")
            runner.append(SdkRunner(docker.from_env(timeout=60).api, image, remove_on_clock=False))
        start = time.time()
        output = runner[0].run(code, input)
        return {"output": output, "startTime": start, "endTime": time.time()}

    return app


app = make_app(os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/0"),
               os.environ.get("BENCH_CELERY_QUEUE", "bench-baseline"))
