"""Throughput of no-op integration tasks: taskexec (REST -> COMPLETED in PostgreSQL) vs bare Celery.

Usage: python bench/throughput.py [-n 500] [-k 16] [--workers 1] [--concurrency 8] [--auth apikey|jwt]
Needs PostgreSQL at TEL_TEST_DATABASE_URL and Redis at TEL_TEST_REDIS_URL (``make setup``); no Docker.
Everything else is started here and stopped at the end; Redis is never flushed (only this run's keys go).

* target: a local HTTP server in its own process whose ``GET /noop`` answers ``{}`` at once.
* taskexec: a fresh migrated database, ``taskexec router`` (gunicorn, as configured by TEL_ROUTER_*) and
  ``--workers`` x ``taskexec worker integration --concurrency C``; one INTEGRATION definition doing
  ``GET /noop``. K client threads submit N tasks over REST (a keep-alive session each, an API key of
  role ``submitter`` by default); done when one ``count(*)`` query sees N COMPLETED rows. The target's
  rate limit is raised (TEL_RATE_LIMIT_HOSTS) so that no task is deferred; no orchestrator is configured.
* bare Celery: ``--workers`` x ``celery worker -P threads -c C`` on a fresh queue of the same Redis (also
  the result backend), Celery's defaults otherwise; its task does the same ``GET /noop`` with a pooled
  ``requests`` session. K client threads ``delay()`` N tasks, then each ``get()``s its own results.

Each client submits twice before the clock starts (connections, imports). Prints submits/s (N / time
until the last submit returned), end-to-end tasks/s (N / time from the first submit until all N are
done), p50/p99 submit latency, the ratios, and the CPU each process spent per task.

Reading the figures: the clients are closed-loop (each sends its next submit when the last returns), so
submit latency is about K / submits-per-second (Little's law) while the workers share the CPU. Bare
Celery's end-to-end rate with the threads pool on Redis is bounded by its consumer loop fetching a
prefetch-full of messages per event-loop tick, not by CPU; it grows with --concurrency.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.profile_router import cpu_delta, cpu_snapshot, start_profilers  # noqa: E402
from tests import support  # noqa: E402

NOOP_PATH = "/noop"
DEF_ID = "noop"
WARMUP_EACH = 2
DONE_TIMEOUT_S = 240.0
BASELINE_TASK = "bench.throughput.noop_http"


def make_baseline_app(broker: str, queue: str) -> Celery:
    """A Celery app on `broker` (also the result backend) with one task: GET a URL, return its status."""
    app = Celery("bench_throughput", broker=broker, backend=broker)
    app.conf.update(task_default_queue=queue, task_serializer="json", result_serializer="json",
                    accept_content=["json"], result_expires=600, broker_connection_retry_on_startup=True,
                    worker_hijack_root_logger=False)
    local = threading.local()

    @app.task(name=BASELINE_TASK)
    def noop_http(url: str) -> int:
        sess = getattr(local, "session", None)
        if sess is None:
            sess = local.session = requests.Session()
            sess.trust_env = False
        return sess.get(url, timeout=(5, 30)).status_code

    return app


# what `celery -A bench.throughput:baseline worker` runs
baseline = make_baseline_app(os.environ.get("BENCH_CELERY_BROKER", support.REDIS_URL),
                             os.environ.get("BENCH_CELERY_QUEUE", "bench-throughput"))


@dataclass
class Result:
    name: str
    submit_ms: list[float] = field(default_factory=list)
    submit_s: float = 0.0  # first submit -> last submit returned
    total_s: float = 0.0  # first submit -> all N done
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process (group) during the run

    def submits_per_s(self) -> float:
        return len(self.submit_ms) / self.submit_s

    def tasks_per_s(self) -> float:
        return len(self.submit_ms) / self.total_s


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (same rule as bench/e2e_latency.py)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run_clients(n: int, submits: list[Callable[[], None]]) -> tuple[list[float], float]:
    """One thread per client shares N submissions; returns (latencies ms, seconds until the last returned)."""
    counter = iter(range(n))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(submits) + 1)

    def work(submit: Callable[[], None]) -> None:
        mine: list[float] = []
        start.wait()
        try:
            while True:
                with lock:
                    if next(counter, None) is None:
                        break
                t = time.perf_counter()
                submit()
                mine.append((time.perf_counter() - t) * 1000)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in submits]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return latencies, time.perf_counter() - t0


def wait_done(count: Callable[[], tuple[int, int]], n: int, what: str) -> None:
    """Poll until `n` are done; fail at once if any ended otherwise."""
    deadline = time.monotonic() + DONE_TIMEOUT_S
    while True:
        done, bad = count()
        if bad:
            raise AssertionError(f"{what}: {bad} ended in a state other than COMPLETED")
        if done >= n:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: only {done}/{n} done after {DONE_TIMEOUT_S}s")
        time.sleep(0.02)


# --------------------------------------------------------------------------- taskexec

class RestClient:
    """One submitting client of the router: a keep-alive session with its credential."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = f"{url}/api/v1/tasks"
        self.http = requests.Session()
        self.http.headers.update(headers)
        self.def_id = "warmup"

    def submit(self) -> None:
        r = self.http.post(self.url, json={"taskDefinitionId": self.def_id, "input": {}}, timeout=30)
        assert r.status_code == 201, r.text


def bench_taskexec(prefix: str, logdir: Path, args: argparse.Namespace, url: str) -> Result:
    """Fresh database, router and integration workers; N tasks over REST; counted COMPLETED in PostgreSQL."""
    import psycopg

    from taskexec.auth import create_api_key, issue_token
    from taskexec.config import Settings
    from taskexec.db import Database
    from taskexec.migrate import upgrade

    dbname = f"bench_{prefix}"
    with support.admin_conn() as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    # The submitting clients' role is exempt from the API rate limit: still counted (its Redis round trip is
    # in the figures), never refused.
    env = support.base_env(dbname, prefix, TEL_RATE_LIMIT_HOSTS="127.0.0.1=1000000/min", TEL_RATE_LIMIT_BURST="1000",
                           TEL_API_RATE_LIMIT_EXEMPT_ROLES="admin,service,submitter",
                           TEL_INTEGRATION_KEY_PREFIX=f"tel:bench:{prefix}", TEL_METRICS_PORT="0",
                           **dict(item.split("=", 1) for item in args.env))
    stack = support.Stack(env, logdir)
    try:
        upgrade(support.db_url(dbname))
        db = Database(support.db_url(dbname))
        with db.session() as s:
            _, key = create_api_key(s, "bench-client", ["submitter"])
        db.dispose()
        stack.start_router()
        for i in range(args.workers):
            stack.start_worker("integration", name=f"integration{i}", concurrency=args.concurrency)
        admin = {"Authorization": "Bearer " + issue_token(Settings(TEL_JWT_SECRET=support.JWT_SECRET),  # type: ignore[call-arg]
                                                          "bench", ["admin"])}
        for def_id in (DEF_ID, "warmup"):
            body = {"id": def_id, "name": def_id, "type": "INTEGRATION",
                    "executionConfig": {"request": {"method": "GET", "url": url}}}
            r = requests.post(f"{stack.url}/api/v1/tasks/definitions", json=body, headers=admin, timeout=10)
            assert r.status_code == 201, r.text
        clients = [RestClient(stack.url, {"X-API-Key": key} if args.auth == "apikey" else admin)
                   for _ in range(args.k)]
        with psycopg.connect(support.db_url(dbname).replace("+psycopg", ""), autocommit=True) as conn:
            def count(def_id: str) -> tuple[int, int]:
                row = conn.execute("SELECT count(*) FILTER (WHERE status = 'COMPLETED'), "
                                   "count(*) FILTER (WHERE status IN ('FAILED', 'TIMED_OUT', 'CANCELLED')) "
                                   "FROM task_instances WHERE definition_id = %s", (def_id,)).fetchone()
                assert row is not None
                return int(row[0]), int(row[1])

            run_clients(WARMUP_EACH * args.k, [c.submit for c in clients])
            wait_done(lambda: count("warmup"), WARMUP_EACH * args.k, "taskexec warm-up")
            for c in clients:
                c.def_id = DEF_ID
            pids = {name: p.popen.pid for name, p in stack.procs.items()}
            spies = start_profilers(args.py_spy, pids)
            cpu0 = cpu_snapshot(pids, dbname)
            t0 = time.perf_counter()
            lat, submit_s = run_clients(args.n, [c.submit for c in clients])
            wait_done(lambda: count(DEF_ID), args.n, "taskexec tasks")
            total = time.perf_counter() - t0
            cpu = cpu_delta(cpu0, cpu_snapshot(pids, dbname))
            for spy in spies:
                spy.stop(sig=2)
        return Result("taskexec (REST -> PG COMPLETED)", lat, submit_s, total, cpu)
    except BaseException:
        for name, proc in stack.procs.items():
            print(f"----- {name} log (tail)\n{proc.text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        stack.stop()
        support.drop_database(dbname)


# --------------------------------------------------------------------------- bare Celery

class CeleryClient:
    """One submitting client: its own app, since the Redis result consumer is not shared between threads."""

    def __init__(self, queue: str, url: str) -> None:
        self.app = make_baseline_app(support.REDIS_URL, queue)
        self.task = self.app.tasks[BASELINE_TASK]
        self.url = url
        self.results: list[Any] = []

    def submit(self) -> None:
        self.results.append(self.task.delay(self.url))

    def collect(self, errors: list[BaseException]) -> None:
        try:
            for res in self.results:
                assert res.get(timeout=DONE_TIMEOUT_S) == 200
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)


def bench_celery(prefix: str, logdir: Path, args: argparse.Namespace, url: str) -> Result:
    """`--workers` Celery workers on a fresh queue; K threads delay(), then each get()s its own results."""
    queue = f"{prefix}-celery"
    env = {**os.environ, "BENCH_CELERY_BROKER": support.REDIS_URL, "BENCH_CELERY_QUEUE": queue,
           "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    celery_bin = str(Path(sys.executable).parent / "celery")
    procs = [support.Proc([celery_bin, "-A", "bench.throughput:baseline", "worker", "-P", args.celery_pool,
                           "-c", str(args.concurrency), "-Q", queue, "-n", f"{queue}-{i}@%h",
                           "--without-gossip", "--without-mingle", "-l", "INFO"], env, logdir / f"celery-{i}.log")
             for i in range(args.workers)]
    clients: list[CeleryClient] = []
    sent: list[Any] = []
    try:
        for proc in procs:
            support.wait_for(lambda p=proc: "ready." in p.text() or p.popen.poll() is not None, 60,  # type: ignore[misc]
                             what="celery worker ready")
            assert proc.popen.poll() is None, proc.text()[-3000:]
        clients = [CeleryClient(queue, url) for _ in range(args.k)]

        def run(n: int) -> tuple[list[float], float, float]:
            t0 = time.perf_counter()
            lat, submit_s = run_clients(n, [c.submit for c in clients])
            errors: list[BaseException] = []
            threads = [threading.Thread(target=c.collect, args=(errors,), daemon=True) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            total = time.perf_counter() - t0
            for c in clients:
                sent.extend(c.results)
                c.results = []
            if errors:
                raise errors[0]
            return lat, submit_s, total

        run(WARMUP_EACH * args.k)
        pids = {f"celery{i}": p.popen.pid for i, p in enumerate(procs)}
        cpu0 = cpu_snapshot(pids)
        lat, submit_s, total = run(args.n)
        return Result("bare Celery (delay + get)", lat, submit_s, total, cpu_delta(cpu0, cpu_snapshot(pids)))
    except BaseException:
        for i, proc in enumerate(procs):
            print(f"----- celery-{i} log (tail)\n{proc.text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        for res in sent:
            res.forget()
        for c in clients:
            c.app.close()
        for proc in procs:
            proc.stop()


# --------------------------------------------------------------------------- target, report, main

def serve_target() -> None:
    """The no-op HTTP target (run in its own process so that it does not share the clients' GIL)."""
    from tests.http_target import Target, json_reply

    target = Target()
    target.on(NOOP_PATH, json_reply({}))
    target.seen = collections.deque(maxlen=0)  # type: ignore[assignment]  # no record of thousands of calls
    print(f"target listening on {target.url}", flush=True)
    threading.Event().wait()


def delete_keys(prefix: str) -> None:
    """Remove this run's Redis keys (queues, breaker/rate-limit state) by their unique prefix."""
    r = redis.Redis.from_url(support.REDIS_URL)
    keys = list(r.scan_iter(match=f"*{prefix}*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


def cpu_line(cpu: dict[str, float], n: int) -> str:
    parts = [f"{name} {sec * 1000 / n:.1f}" for name, sec in cpu.items()]
    return ", ".join(parts) + f" (total {sum(cpu.values()) * 1000 / n:.1f}; Redis not counted)"


def report(args: argparse.Namespace, tel: Result, base: Result, url: str, logdir: Path) -> None:
    print(f"\nthroughput: N={args.n} no-op INTEGRATION tasks (GET {url}, answers at once), K={args.k} closed-loop "
          f"clients, {args.workers} worker process(es) x {args.concurrency} threads, submit auth: {args.auth}")
    print(f"bare Celery: the same GET in a Celery task ({args.celery_pool} pool), same Redis broker (and result "
          f"backend), same worker count; log level INFO for both; logs in {logdir}")
    head = f"{'path':<32} {'submits/s':>10} {'e2e tasks/s':>12} {'submit p50 ms':>14} {'submit p99 ms':>14}"
    print(head)
    print("-" * len(head))
    for r in (tel, base):
        print(f"{r.name:<32} {r.submits_per_s():10.1f} {r.tasks_per_s():12.1f} "
              f"{statistics.median(r.submit_ms):14.1f} {pct(r.submit_ms, 99):14.1f}")
    print(f"{'ratio taskexec / bare Celery':<32} {tel.submits_per_s() / base.submits_per_s():10.2f} "
          f"{tel.tasks_per_s() / base.tasks_per_s():12.2f} "
          f"{statistics.median(tel.submit_ms) / statistics.median(base.submit_ms):14.2f} "
          f"{pct(tel.submit_ms, 99) / pct(base.submit_ms, 99):14.2f}")
    for r in (tel, base):
        print(f"CPU ms per task, {r.name.split(' (')[0]}: " + cpu_line(r.cpu, args.n))
    ratio = tel.tasks_per_s() / base.tasks_per_s()
    p99 = pct(tel.submit_ms, 99)
    print(f"target e2e >= 0.5 x bare Celery: {ratio:.2f} {'met' if ratio >= 0.5 else 'NOT met'}; "
          f"submit p99 <= 50 ms at K={args.k}: {p99:.1f} ms {'met' if p99 <= 50 else 'NOT met'} "
          f"(closed loop: p50 ~ K / submits/s = {args.k / tel.submits_per_s() * 1000:.0f} ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="tasks per path")
    parser.add_argument("-k", type=int, default=16, help="concurrent submitting clients")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (each path)")
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker process")
    parser.add_argument("--celery-pool", choices=("threads", "prefork"), default="threads",
                        help="bare Celery's pool (taskexec's workers always use threads)")
    parser.add_argument("--auth", choices=("apikey", "jwt"), default="apikey", help="credential of the clients")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra setting for the router and workers, e.g. TEL_ROUTER_WORKERS=3 (repeatable)")
    parser.add_argument("--only", choices=("taskexec", "celery"), default=None, help="run one path only")
    parser.add_argument("--py-spy", metavar="DIR", default=None,
                        help="sample the router and workers with py-spy (not a dependency) during the taskexec run")
    parser.add_argument("--serve-target", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_target:
        serve_target()
        return 0
    prefix = "bench" + uuid.uuid4().hex[:8]
    logdir = Path(tempfile.mkdtemp(prefix="tel-throughput-"))
    target = support.Proc([sys.executable, __file__, "--serve-target"], {**os.environ, "PYTHONUNBUFFERED": "1"},
                          logdir / "target.log")
    try:
        support.wait_for(lambda: "listening" in target.text() or target.popen.poll() is not None, 30,
                         what="target ready")
        assert target.popen.poll() is None, target.text()
        url = target.text().split("listening on ", 1)[1].split()[0] + NOOP_PATH
        base = bench_celery(prefix, logdir, args, url) if args.only != "taskexec" else None
        tel = bench_taskexec(prefix, logdir, args, url) if args.only != "celery" else None
    finally:
        delete_keys(prefix)
        target.stop()
    if tel and base:
        report(args, tel, base, url, logdir)
    elif r := tel or base:
        print(f"{r.name}: {r.submits_per_s():.1f} submits/s, {r.tasks_per_s():.1f} tasks/s, submit p50 "
              f"{statistics.median(r.submit_ms):.1f} ms p99 {pct(r.submit_ms, 99):.1f} ms; CPU ms/task "
              + cpu_line(r.cpu, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
