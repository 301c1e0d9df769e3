"""End-to-end latency and throughput of automated hello-world tasks: taskexec vs ``docker run`` and vs bare
Celery with the same sandbox.

Usage: python bench/e2e_latency.py [-n 20] [-m 20] [--rounds 3]
Needs the test services (``make setup``): PostgreSQL at TEL_TEST_DATABASE_URL, Redis at
TEL_TEST_REDIS_URL, Docker with the sandbox image. Everything else is started here and stopped at the end:

* taskexec: a fresh migrated database, ``taskexec router`` and one ``taskexec worker automated``
  (concurrency 2, warm pool TEL_SANDBOX_POOL_SIZE default 2), ``WORKFLOW_ORCHESTRATOR_URL`` pointing at
  the benchmark's orchestrator (`bench/receiver.py`, its own process). A task goes in over REST and is
  done when the orchestrator has received its ``task.instance.completed`` event (every event of the task
  delivered, in order).
* ``docker run --rm``: the CLI with the sandbox's hardening flags and harness (`bench/docker_baseline.py`),
  the removal on the clock as the CLI does it. This is the ``docker run`` of the targets.
* bare Celery + Docker SDK (`bench/celery_baseline.py`): prefork -c 2, late ack, prefetch 1, Redis broker
  and result backend; the task runs the same harness and hardening through the Docker SDK and removes
  the container after the answer, off the clock; ``apply_async`` then ``get()``.

Latency: n tasks of each path one after the other, interleaved (one of each per turn, the order
rotating); p50 / p95 of submit -> done, and the ratios. Throughput: m tasks submitted at once, timed
until all are done, --rounds interleaved rounds (taskexec and bare Celery), median [min-max]. Redis is
never flushed: only the keys carrying this run's unique prefix are deleted.
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
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.celery_baseline import TASK_NAME, make_app  # noqa: E402
from bench.common import delete_keys, machine, pct, spread, start_helper  # noqa: E402
from bench.docker_baseline import docker_run  # noqa: E402
from tests import support  # noqa: E402

HELLO = "def main(input):\n    return {'greeting': 'Hello, ' + input['name']}\n"
INPUT = {"name": "world"}
EXPECTED = {"greeting": "Hello, world"}
IMAGE = "taskexec-sandbox-python:1"
DONE = "task.instance.completed"
TERMINAL = ("task.instance.completed", "task.instance.failed", "task.instance.cancelled", "task.instance.timed_out")


class Taskexec:
    """A REST client of one router (admin token) and the orchestrator that receives its events."""

    def __init__(self, url: str, receiver: str) -> None:
        from taskexec.core.config import Settings
        from taskexec.store.auth import issue_token

        token = issue_token(Settings(TEL_JWT_SECRET=support.JWT_SECRET), "bench", ["admin"])  # type: ignore[call-arg]
        self.url = url
        self.receiver = receiver
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.events = requests.Session()
        self.events.trust_env = False
        self.arrived: dict[str, float] = {}  # task id -> time.time() its completed event reached the receiver
        self.stages: list[dict[str, float]] = []

    def define(self, def_id: str) -> None:
        body = {"id": def_id, "name": def_id, "type": "AUTOMATED",
                "executionConfig": {"runtime": "python", "code": HELLO}}
        r = self.http.post(f"{self.url}/api/v1/tasks/definitions", json=body, timeout=10)
        assert r.status_code == 201, r.text

    def submit(self, def_id: str) -> str:
        r = self.http.post(f"{self.url}/api/v1/tasks", json={"taskDefinitionId": def_id, "input": INPUT},
                           timeout=30)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def done(self, task_id: str, wait: float = 0.0) -> bool:
        """True once the orchestrator has the task's terminal event (asserted to be completed); waits up to
        `wait` seconds for it (the receiver answers as soon as it arrives)."""
        got = self.events.get(f"{self.receiver}/tasks/{task_id}?wait={wait}", timeout=wait + 10).json()
        ended = [t for t in got["types"] if t in TERMINAL]
        assert ended in ([], [DONE]), got
        if ended:
            self.arrived[task_id] = got["at"][got["types"].index(DONE)]
        return bool(ended)

    def wait(self, task_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.done(task_id, wait=5.0):
            assert time.monotonic() < deadline, f"no terminal event for {task_id}"

    def one(self) -> float:
        t, wall = time.perf_counter(), time.time()
        task_id = self.submit("hello")
        answered = time.time()
        self.wait(task_id)
        seen = time.time()
        total = (time.perf_counter() - t) * 1000
        self.stages.append(self.stages_of(task_id, wall, answered, seen))
        return total

    def stages_of(self, task_id: str, submitted: float, answered: float, seen: float) -> dict[str, float]:
        """Where one task's time went (ms), from the router's timestamps and the receiver's arrival time."""
        from datetime import datetime

        task = self.http.get(f"{self.url}/api/v1/tasks/{task_id}", timeout=10).json()
        meta = task["executionMetadata"]
        created = datetime.fromisoformat(task["createdAt"]).timestamp()
        started = datetime.fromisoformat(meta["startTime"]).timestamp()
        ended = datetime.fromisoformat(meta["endTime"]).timestamp()
        return {"submit -> stored": (created - submitted) * 1000, "stored -> 201 seen": (answered - created) * 1000,
                "stored -> started": (started - created) * 1000, "started -> finished": (ended - started) * 1000,
                "of which the container": meta["durationMs"],
                "finished -> event received": (self.arrived[task_id] - ended) * 1000,
                "received -> seen by the client": (seen - self.arrived[task_id]) * 1000}

    def burst(self, m: int) -> float:
        t = time.perf_counter()
        ids = [self.submit("hello") for _ in range(m)]
        for task_id in ids:
            self.wait(task_id)
        return m / (time.perf_counter() - t)

    def check_outputs(self, n: int) -> None:
        r = self.http.get(f"{self.url}/api/v1/tasks?limit=100&status=COMPLETED", timeout=10)
        items = r.json()["items"]
        assert items and all(t["output"] == EXPECTED for t in items), items[:3]


class BareCelery:
    """The Celery + Docker SDK baseline: one prefork worker on a fresh queue of the same Redis."""

    def __init__(self, prefix: str, logdir: Path) -> None:
        self.queue = f"{prefix}-baseline"
        env = {**os.environ, "BENCH_CELERY_BROKER": support.REDIS_URL, "BENCH_CELERY_QUEUE": self.queue,
               "BENCH_IMAGE": IMAGE, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        celery_bin = str(Path(sys.executable).parent / "celery")
        self.proc = support.Proc([celery_bin, "-A", "bench.celery_baseline", "worker", "-P", "prefork", "-c", "2",
                                  "-Q", self.queue, "-n", f"{self.queue}@%h", "--without-gossip", "--without-mingle",
                                  "-l", "INFO"], env, logdir / "celery-baseline.log")
        self.app = make_app(support.REDIS_URL, self.queue)
        self.results: list[Any] = []
        support.wait_for(lambda: "ready." in self.proc.text() or self.proc.popen.poll() is not None, 60,
                         what="celery worker ready")
        assert self.proc.popen.poll() is None, self.proc.text()[-3000:]

    def _send(self) -> Any:
        res = self.app.send_task(TASK_NAME, args=[HELLO, INPUT], queue=self.queue)
        self.results.append(res)
        return res

    def one(self) -> float:
        t = time.perf_counter()
        value = self._send().get(timeout=120)
        ms = (time.perf_counter() - t) * 1000
        assert value["output"] == EXPECTED, value
        return ms

    def burst(self, m: int) -> float:
        t = time.perf_counter()
        pending = [self._send() for _ in range(m)]
        assert all(r.get(timeout=300)["output"] == EXPECTED for r in pending)
        return m / (time.perf_counter() - t)

    def stop(self) -> None:
        for res in self.results:
            res.forget()
        self.proc.stop()
        self.app.close()


def cli_one() -> float:
    t = time.perf_counter()
    assert docker_run(IMAGE, HELLO, INPUT) == EXPECTED
    return (time.perf_counter() - t) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="sequential tasks per path (latency)")
    parser.add_argument("-m", type=int, default=20, help="tasks submitted at once (throughput)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    args = parser.parse_args()
    print(machine(), flush=True)
    prefix = "bench" + uuid.uuid4().hex[:8]
    logdir = Path(tempfile.mkdtemp(prefix="tel-bench-"))
    dbname = f"bench_{prefix}"
    receiver, receiver_url = start_helper([sys.executable, str(ROOT / "bench" / "receiver.py")],
                                          logdir / "receiver.log", "receiver")
    stack: support.Stack | None = None
    celery: BareCelery | None = None
    lat: dict[str, list[float]] = {"taskexec": [], "docker run --rm": [], "Celery + Docker SDK": []}
    tput: dict[str, list[float]] = {"taskexec": [], "Celery + Docker SDK": []}
    try:
        from taskexec.store.migrate import upgrade

        with support.admin_conn() as conn:
            conn.execute(f"CREATE DATABASE {dbname}")
        stack = support.Stack(support.base_env(dbname, prefix, WORKFLOW_ORCHESTRATOR_URL=receiver_url), logdir)
        upgrade(support.db_url(dbname))
        stack.start_router()
        stack.start_worker("automated", concurrency=2)
        tel = Taskexec(stack.url, receiver_url)
        tel.define("hello")
        celery = BareCelery(prefix, logdir)
        ones: dict[str, Callable[[], float]] = {"taskexec": tel.one, "docker run --rm": cli_one,
                                                "Celery + Docker SDK": celery.one}
        for fn in ones.values():  # warm-up
            for _ in range(3):
                fn()
        names = list(ones)
        for i in range(args.n):
            for name in names[i % len(names):] + names[: i % len(names)]:
                lat[name].append(ones[name]())
        bursts: dict[str, Callable[[int], float]] = {"taskexec": tel.burst, "Celery + Docker SDK": celery.burst}
        for i in range(args.rounds):
            for name in (list(bursts) if i % 2 == 0 else list(bursts)[::-1]):
                time.sleep(1.0)  # the pool refills, the background removals finish
                tput[name].append(bursts[name](args.m))
        tel.check_outputs(args.n)
    except BaseException:
        for name, proc in (stack.procs.items() if stack else []):
            print(f"----- {name} log (tail)\n{proc.text()[-3000:]}", file=sys.stderr)
        if celery is not None:
            print(f"----- celery log (tail)\n{celery.proc.text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        if celery is not None:
            celery.stop()
        if stack is not None:
            stack.stop()
        support.drop_database(dbname)
        receiver.stop()
        delete_keys(prefix)
    print(f"\nautomated hello-world: n={args.n} sequential tasks per path, interleaved; m={args.m} at once, "
          f"{args.rounds} interleaved rounds (median [min-max]); logs in {logdir}")
    print("taskexec: REST submit -> task.instance.completed received by the orchestrator (router, automated pool "
          "c=2 with its warm pool, outbox); docker run --rm: hardened CLI run, removal on the clock; Celery + "
          "Docker SDK: prefork c=2, same harness and hardening, removal after the answer")
    print(f"{'path':<22} {'p50 ms':>8} {'p95 ms':>8} {'min-max ms':>16} {'tasks/s (burst)':>22}")
    for name, values in lat.items():
        burst = spread(tput[name], "{:.2f}") if name in tput else "-"
        print(f"{name:<22} {statistics.median(values):8.1f} {pct(values, 95):8.1f} "
              f"{min(values):7.1f}-{max(values):<8.1f} {burst:>22}")
    print("taskexec, where the time goes (p50 ms): " + ", ".join(
        f"{k} {statistics.median(s[k] for s in tel.stages[-args.n:]):.1f}" for k in tel.stages[-1]))
    p50 = {name: statistics.median(values) for name, values in lat.items()}
    ratio = p50["taskexec"] / p50["docker run --rm"]
    print(f"ratio p50 taskexec / docker run --rm:      {ratio:.2f}  "
          f"(target <= 0.2: {'met' if ratio <= 0.2 else 'NOT met'})")
    print(f"ratio p50 taskexec / Celery + Docker SDK:  {p50['taskexec'] / p50['Celery + Docker SDK']:.2f}")
    if tput["taskexec"] and tput["Celery + Docker SDK"]:
        print(f"ratio burst tasks/s taskexec / Celery + Docker SDK: "
              f"{statistics.median(tput['taskexec']) / statistics.median(tput['Celery + Docker SDK']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
