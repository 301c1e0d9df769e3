"""End-to-end latency and throughput of automated tasks: taskexec vs bare Celery + ``docker run``.

Usage: python bench/e2e_latency.py [-n 20] [-m 20] [--settle 0.3]
Needs the test services (``make setup``): PostgreSQL at TEL_TEST_DATABASE_URL, Redis at
TEL_TEST_REDIS_URL, Docker with the sandbox image. Everything else is started here and stopped at the end:

* taskexec: a fresh migrated database, ``taskexec router`` and one ``taskexec worker automated``
  (concurrency 2, warm pool TEL_SANDBOX_POOL_SIZE default 2) on queues of their own; tasks go in over
  REST and are polled with GET until COMPLETED.
* baseline: ``celery -A bench.celery_baseline worker -P threads -c 2`` on the same Redis (a fresh queue,
  Redis result backend) whose task runs the same code with ``docker run --rm --network=none -i``;
  tasks go in with ``apply_async`` and are awaited with ``result.get()``.

Latency phase: n tasks one after the other (submit -> result), with --settle seconds between tasks,
also the dequeue -> result part (taskexec: executionMetadata startTime/endTime; baseline: measured in
the task). Throughput phase: m tasks submitted at once, timed until the last one has its result.
Prints p50/p95 of each, the ratios taskexec/baseline and tasks/s. Redis is never flushed: only the
keys carrying this run's unique prefix are deleted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.celery_baseline import TASK_NAME, make_app  # noqa: E402
from tests import support  # noqa: E402

HELLO = "def main(input):\n    return {'greeting': 'Hello, ' + input['name']}\n"
INPUT = {"name": "world"}
EXPECTED = {"greeting": "Hello, world"}
IMAGE = "taskexec-sandbox-python:1"
POLL_S = 0.01
Sample = tuple[list[float], list[float], float]  # latencies ms, dequeue->result ms, tasks/s


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (same rule as bench/sandbox_latency.py)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Taskexec:
    """A REST client of one router, with an admin token."""

    def __init__(self, url: str) -> None:
        from taskexec.auth import issue_token
        from taskexec.config import Settings

        token = issue_token(Settings(TEL_JWT_SECRET=support.JWT_SECRET), "bench", ["admin"])  # type: ignore[call-arg]
        self.url = url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def define(self, def_id: str) -> None:
        body = {"id": def_id, "name": def_id, "type": "AUTOMATED",
                "executionConfig": {"runtime": "python", "code": HELLO}}
        r = self.http.post(f"{self.url}/api/v1/tasks/definitions", json=body, timeout=10)
        assert r.status_code == 201, r.text

    def submit(self, def_id: str) -> str:
        r = self.http.post(f"{self.url}/api/v1/tasks", json={"taskDefinitionId": def_id, "input": INPUT},
                           timeout=10)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def done(self, task_id: str) -> dict[str, Any] | None:
        """The task once terminal (asserting COMPLETED with the expected output), else None."""
        r = self.http.get(f"{self.url}/api/v1/tasks/{task_id}", timeout=10)
        task: dict[str, Any] = r.json()
        if task["status"] not in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
            return None
        assert task["status"] == "COMPLETED" and task["output"] == EXPECTED, task
        return task

    def run_one(self, def_id: str) -> tuple[float, float]:
        t = time.perf_counter()
        task_id = self.submit(def_id)
        while (task := self.done(task_id)) is None:
            time.sleep(POLL_S)
        total = (time.perf_counter() - t) * 1000
        meta = task["executionMetadata"]
        run = datetime.fromisoformat(meta["endTime"]) - datetime.fromisoformat(meta["startTime"])
        return total, run.total_seconds() * 1000

    def burst(self, def_id: str, m: int) -> float:
        t = time.perf_counter()
        ids = [self.submit(def_id) for _ in range(m)]
        for task_id in ids:  # in submission order, like result.get() on the baseline's results
            while self.done(task_id) is None:
                time.sleep(POLL_S)
        return m / (time.perf_counter() - t)


def measure(one: Callable[[], tuple[float, float]], burst: Callable[[int], float], n: int, m: int,
            settle: float, warmup: int = 3) -> Sample:
    """Warm-up runs, then n sequential runs, then one burst of m."""
    for _ in range(warmup):
        one()
    lat, run = [], []
    for _ in range(n):
        time.sleep(settle)
        total, inner = one()
        lat.append(total)
        run.append(inner)
    time.sleep(settle)
    return lat, run, burst(m)


def bench_taskexec(prefix: str, logdir: Path, n: int, m: int, settle: float) -> Sample:
    """Fresh database, router and automated worker; measure; stop them and drop the database."""
    from taskexec.migrate import upgrade

    dbname = f"bench_{prefix}"
    with support.admin_conn() as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    stack = support.Stack(support.base_env(dbname, prefix), logdir)
    try:
        upgrade(support.db_url(dbname))
        stack.start_router()
        stack.start_worker("automated", concurrency=2)
        client = Taskexec(stack.url)
        client.define("hello")
        return measure(lambda: client.run_one("hello"), lambda k: client.burst("hello", k), n, m, settle)
    except BaseException:
        for name, proc in stack.procs.items():
            print(f"----- {name} log (tail)\n{proc.text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        stack.stop()
        support.drop_database(dbname)


def bench_baseline(prefix: str, logdir: Path, n: int, m: int, settle: float) -> Sample:
    """A Celery worker on a fresh queue of the same Redis; measure; stop it and forget the results."""
    queue = f"{prefix}-baseline"
    env = {**os.environ, "BENCH_CELERY_BROKER": support.REDIS_URL, "BENCH_CELERY_QUEUE": queue,
           "BENCH_IMAGE": IMAGE, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    celery_bin = str(Path(sys.executable).parent / "celery")
    proc = support.Proc([celery_bin, "-A", "bench.celery_baseline", "worker", "-P", "threads", "-c", "2", "-Q",
                         queue, "-n", f"{queue}@%h", "--without-gossip", "--without-mingle", "-l", "INFO"],
                        env, logdir / "celery-baseline.log")
    app = make_app(support.REDIS_URL, queue)
    results: list[Any] = []

    def call() -> Any:
        res = app.send_task(TASK_NAME, args=[HELLO, INPUT], queue=queue)
        results.append(res)
        return res

    def one() -> tuple[float, float]:
        t = time.perf_counter()
        value = call().get(timeout=60)
        total = (time.perf_counter() - t) * 1000
        assert value["output"] == EXPECTED, value
        return total, (value["endTime"] - value["startTime"]) * 1000

    def burst(k: int) -> float:
        t = time.perf_counter()
        pending = [call() for _ in range(k)]
        assert all(r.get(timeout=120)["output"] == EXPECTED for r in pending)
        return k / (time.perf_counter() - t)

    try:
        support.wait_for(lambda: "ready." in proc.text() or proc.popen.poll() is not None, 60,
                         what="celery worker ready")
        assert proc.popen.poll() is None, proc.text()[-3000:]
        return measure(one, burst, n, m, settle)
    except BaseException:
        print(f"----- celery log (tail)\n{proc.text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        for res in results:
            res.forget()
        proc.stop()
        app.close()


def delete_keys(prefix: str) -> int:
    """Remove this run's Redis keys (queues, bindings) by their unique prefix; nothing else is touched."""
    r = redis.Redis.from_url(support.REDIS_URL)
    keys = list(r.scan_iter(match=f"*{prefix}*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()
    return len(keys)


def row(name: str, s: Sample) -> str:
    lat, run, tput = s
    return (f"{name:<32} {statistics.median(lat):8.1f} {pct(lat, 95):8.1f} {statistics.median(run):9.1f} "
            f"{pct(run, 95):9.1f} {tput:9.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="sequential tasks for latency")
    parser.add_argument("-m", type=int, default=20, help="tasks submitted at once for throughput")
    parser.add_argument("--settle", type=float, default=0.3, help="pause between sequential tasks (s)")
    args = parser.parse_args()
    prefix = "bench" + uuid.uuid4().hex[:8]
    logdir = Path(tempfile.mkdtemp(prefix="tel-bench-"))
    try:
        base = bench_baseline(prefix, logdir, args.n, args.m, args.settle)
        tel = bench_taskexec(prefix, logdir, args.n, args.m, args.settle)
    finally:
        delete_keys(prefix)
    print(f"automated hello-world, n={args.n} sequential (settle {args.settle}s), m={args.m} at once, "
          f"concurrency 2 each; logs in {logdir}")
    print(f"{'path':<32} {'p50 ms':>8} {'p95 ms':>8} {'run p50':>9} {'run p95':>9} {'tasks/s':>9}")
    print(row("taskexec (REST+PG+worker+pool)", tel))
    print(row("baseline (Celery+docker run)", base))
    ratios = [statistics.median(tel[0]) / statistics.median(base[0]), pct(tel[0], 95) / pct(base[0], 95),
              statistics.median(tel[1]) / statistics.median(base[1]), pct(tel[1], 95) / pct(base[1], 95),
              tel[2] / base[2]]
    print(f"{'ratio taskexec/baseline':<32} {ratios[0]:8.2f} {ratios[1]:8.2f} {ratios[2]:9.2f} "
          f"{ratios[3]:9.2f} {ratios[4]:9.2f}")
    print("p50/p95: submit -> result seen by the client; run: dequeue -> result (worker side)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
