"""Throughput of no-op tasks: taskexec (REST -> COMPLETED, every event delivered) vs a fair bare Celery.

Usage: python bench/throughput.py [-n 600] [-k 16] [--rounds 3] [--paths ...] [--workers 1] [--concurrency C]
Needs PostgreSQL at TEL_TEST_DATABASE_URL and Redis at TEL_TEST_REDIS_URL (``make setup``); no Docker.
Everything is started here and stopped at the end; Redis is never flushed (only this run's keys go).

Helper processes (their own interpreters, so no lock is shared with the clients): the no-op target,
whose ``GET /noop`` answers ``{}`` at once, and the orchestrator (`bench/receiver.py`), which counts
the events it receives.

Paths, each started once and then measured in --rounds interleaved rounds (the order rotates from
round to round, so that load from elsewhere on the machine falls on all of them alike):

* ``celery-prefork``: bare Celery 5 with the same reliability settings as taskexec's pools (``acks_late``,
  ``reject_on_worker_lost``, prefetch 1), ``-P prefork -c <cores>``, Redis broker and result backend; the
  task does the same ``GET /noop`` with a keep-alive session. K client threads ``delay()`` N tasks, and
  each then ``get()``s its own results; done when the last result is in.
* ``celery-threads``: the same with ``-P threads -c --concurrency`` and the event-loop waker of
  ``workers/wakeup.py`` (without it a late ack waits for the loop's next timer). The better of the two
  Celery paths is the *fair bare Celery* every ratio uses.
* ``taskexec``: a fresh migrated database, ``taskexec router`` and ``--workers`` x ``taskexec worker
  integration --concurrency C``, ``WORKFLOW_ORCHESTRATOR_URL`` pointing at the receiver; one INTEGRATION
  definition doing ``GET /noop``. K client threads submit N tasks over REST (a keep-alive session each,
  an API key of role ``submitter``); done when the receiver has the terminal event of all N tasks.
* ``taskexec-batch``: the same stack; --batch-clients clients submit N tasks with ``POST
  /api/v1/tasks/batch``, --batch-size items per request; done the same way.
* ``celery-paced`` and ``taskexec-paced``: submit latency at a load both sustain. The K clients offer
  --paced-rate submissions/s together, open loop (submission i is due at t0 + i / rate; its latency
  counts from then), --paced-n per round; celery-paced is the prefork baseline. The closed-loop paths
  above measure capacity, and their submit latency is about K / submits-per-second whatever the code
  does (Little's law).

Per path it prints, as median [min-max] over the rounds: submits/s (N / time until the last submit
returned), end-to-end tasks/s (N / time from the first submit until all N are done), submit latency
p50/p99, and CPU ms per task for every process (router, pools, PostgreSQL backends of the bench
database; the target, the receiver and the clients are shown but not counted; Redis is not counted,
it is shared with other users). Then the ratios to the fair bare Celery and the targets of issue 14.

Reading the figures: the clients are closed-loop (each sends its next submit when the last returns), so
submit latency is about K / submits-per-second (Little's law) while everything shares the CPU.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    CpuSample,
    ReceiverClient,
    counted_total,
    cpu_lines,
    cpu_sample,
    delete_keys,
    machine,
    median,
    pct,
    spread,
    start_helper,
)
from bench.profile_router import start_profilers  # noqa: E402
from taskexec.core.config import Settings  # noqa: E402
from tests import support  # noqa: E402

NOOP_PATH = "/noop"
DEF_ID = "noop"
WARMUP_EACH = 3
DONE_TIMEOUT_S = 300.0
BASELINE_TASK = "bench.throughput.noop_http"
COUNTED = ("router", "integration", "postgres", "celery")  # CPU groups that make up "the system"
PATHS = ("celery-prefork", "celery-threads", "taskexec", "taskexec-batch", "celery-paced", "taskexec-paced")


def make_baseline_app(broker: str, queue: str, pool: str = "prefork") -> Celery:
    """A Celery app on `broker` (also the result backend) with one task: GET a URL, return its status.

    The delivery settings are taskexec's own (late ack, reject on a lost worker, prefetch 1); with the
    threads pool, the event-loop waker of `workers/wakeup.py` too."""
    app = Celery("bench_throughput", broker=broker, backend=broker)
    app.conf.update(task_default_queue=queue, task_serializer="json", result_serializer="json",
                    accept_content=["json"], result_expires=600, broker_connection_retry_on_startup=True,
                    worker_hijack_root_logger=False, task_acks_late=True, task_reject_on_worker_lost=True,
                    worker_prefetch_multiplier=1)
    local = threading.local()
    extra: dict[str, Any] = {}
    if pool == "threads":
        from workers import wakeup

        app.steps["consumer"].add(wakeup.EventLoopWaker)
        extra["Request"] = wakeup.REQUEST

    @app.task(name=BASELINE_TASK, shared=False, **extra)  # not shared: each app has its own (no name clash)
    def noop_http(url: str) -> int:
        sess = getattr(local, "session", None)
        if sess is None:
            sess = local.session = requests.Session()
            sess.trust_env = False
        return sess.get(url, timeout=(5, 30)).status_code

    return app


# what `celery -A bench.throughput:baseline worker` runs
baseline = make_baseline_app(os.environ.get("BENCH_CELERY_BROKER", support.REDIS_URL),
                             os.environ.get("BENCH_CELERY_QUEUE", "bench-throughput"),
                             os.environ.get("BENCH_CELERY_POOL", "prefork"))


@dataclass
class Round:
    """One measured run of one path."""

    n: int
    submit_ms: list[float]
    submit_s: float  # first submit -> last submit returned
    total_s: float  # first submit -> all N done
    cpu: CpuSample = field(default_factory=CpuSample)

    def submits_per_s(self) -> float:
        return self.n / self.submit_s

    def tasks_per_s(self) -> float:
        return self.n / self.total_s


def run_clients(n: int, submits: list[Callable[[int], int]], chunk: int = 1) -> tuple[list[float], float, float]:
    """Client threads share N submissions (`chunk` per call; a call returns how many it sent).

    Returns (latencies ms, perf_counter at the start, seconds until the last call returned)."""
    left = [n]
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(submits) + 1)

    def work(submit: Callable[[int], int]) -> None:
        mine: list[float] = []
        start.wait()
        try:
            while True:
                with lock:
                    size = min(chunk, left[0])
                    left[0] -= size
                if size <= 0:
                    break
                t = time.perf_counter()
                submit(size)
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
    return latencies, t0, time.perf_counter() - t0


def run_paced(n: int, submits: list[Callable[[int], int]], rate: float) -> tuple[list[float], float, float]:
    """Open loop: submission i is due at t0 + i / rate, sent by client i mod K. Its latency counts from when
    it was due, so a client held up by a slow answer shows as latency, not as fewer submissions (no
    coordinated omission). Same return as `run_clients`."""
    k = len(submits)
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(k + 1)
    t0 = [0.0]

    def work(j: int) -> None:
        mine: list[float] = []
        start.wait()
        try:
            for i in range(j, n, k):
                due = t0[0] + i / rate
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                submits[j](1)
                mine.append((time.perf_counter() - due) * 1000)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=work, args=(j,), daemon=True) for j in range(k)]
    for t in threads:
        t.start()
    t0[0] = time.perf_counter() + 0.05
    start.wait()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return latencies, t0[0], time.perf_counter() - t0[0]


# --------------------------------------------------------------------------- taskexec

class RestClient:
    """One submitting client of the router: a keep-alive session with its credential."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = f"{url}/api/v1/tasks"
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers.update(headers)
        self.def_id = DEF_ID

    def submit(self, size: int) -> int:
        assert size == 1
        r = self.http.post(self.url, json={"taskDefinitionId": self.def_id, "input": {}}, timeout=60)
        assert r.status_code == 201, r.text
        return 1

    def submit_batch(self, size: int) -> int:
        items = [{"taskDefinitionId": self.def_id, "input": {}} for _ in range(size)]
        r = self.http.post(self.url + "/batch", json={"tasks": items}, timeout=120)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert len(results) == size and all(x.get("status") == "PENDING" for x in results), r.text[:500]
        return size


class Taskexec:
    """One router and its integration workers on a fresh database; both taskexec paths use it."""

    def __init__(self, prefix: str, logdir: Path, args: argparse.Namespace, url: str, receiver: str) -> None:
        self.prefix, self.logdir, self.args, self.url = prefix, logdir, args, url
        self.receiver = ReceiverClient(receiver)
        self.dbname = f"bench_{prefix}"
        self.stack: support.Stack | None = None
        self.clients: list[RestClient] = []
        self.batchers: list[RestClient] = []
        self.conn: Any = None
        self.expected = 0  # tasks submitted so far (all must end with a terminal event)

    def start(self) -> None:
        import psycopg

        from taskexec.core.config import Settings
        from taskexec.store.auth import create_api_key, issue_token
        from taskexec.store.db import Database
        from taskexec.store.migrate import upgrade

        args = self.args
        with support.admin_conn() as conn:
            conn.execute(f"CREATE DATABASE {self.dbname}")
        env = support.base_env(self.dbname, self.prefix, TEL_RATE_LIMIT_HOSTS="127.0.0.1=100000000/min",
                               TEL_RATE_LIMIT_BURST="100000", TEL_INTEGRATION_KEY_PREFIX=f"tel:bench:{self.prefix}",
                               TEL_METRICS_PORT="0", WORKFLOW_ORCHESTRATOR_URL=self.receiver.url,
                               # the submitting clients' role is exempt from the API rate limit: still
                               # counted (its Redis round trip is in the figures), never refused
                               TEL_API_RATE_LIMIT_EXEMPT_ROLES="admin,service,submitter",
                               **dict(item.split("=", 1) for item in args.env))
        self.stack = stack = support.Stack(env, self.logdir)
        upgrade(support.db_url(self.dbname))
        db = Database(support.db_url(self.dbname))
        with db.session() as s:
            _, key = create_api_key(s, "bench-client", ["submitter"])
        db.dispose()
        stack.start_router()
        for i in range(args.workers):
            stack.start_worker("integration", name=f"integration{i}", concurrency=args.concurrency)
        admin = {"Authorization": "Bearer " + issue_token(Settings(TEL_JWT_SECRET=support.JWT_SECRET),  # type: ignore[call-arg]
                                                          "bench", ["admin"])}
        body = {"id": DEF_ID, "name": DEF_ID, "type": "INTEGRATION",
                "executionConfig": {"request": {"method": "GET", "url": self.url}}}
        r = requests.post(f"{stack.url}/api/v1/tasks/definitions", json=body, headers=admin, timeout=10)
        assert r.status_code == 201, r.text
        cred = {"X-API-Key": key} if args.auth == "apikey" else admin
        self.clients = [RestClient(stack.url, cred) for _ in range(args.k)]
        self.batchers = [RestClient(stack.url, cred) for _ in range(args.batch_clients)]
        self.conn = psycopg.connect(support.db_url(self.dbname).replace("+psycopg", ""), autocommit=True)
        for _ in range(2):  # warm-up: connections, imports, statement caches (both submit kinds)
            self._round(WARMUP_EACH * args.k, [c.submit for c in self.clients], 1)
            if "taskexec-batch" in args.paths:
                self._round(args.batch_size, [c.submit_batch for c in self.batchers[:1]], args.batch_size)

    def pids(self) -> dict[str, int]:
        assert self.stack is not None
        return {name.rstrip("0123456789") if self.args.workers == 1 else name: p.popen.pid
                for name, p in self.stack.procs.items()}

    def _round(self, n: int, submits: list[Callable[[int], int]], chunk: int,
               helpers: dict[str, int] | None = None, rate: float | None = None) -> Round:
        base = self.receiver.stats()["terminal"]
        self.expected += n
        groups = {**self.pids(), **(helpers or {})}
        cpu0 = cpu_sample(groups, self.dbname)
        lat, t0, submit_s = run_paced(n, submits, rate) if rate else run_clients(n, submits, chunk)
        done = self.receiver.wait_terminal(base + n, DONE_TIMEOUT_S)
        cpu = cpu_sample(groups, self.dbname).minus(cpu0)
        total = done - t0
        completed, bad = self.conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FILTER (WHERE status <> 'COMPLETED') "
            "FROM task_instances").fetchone()
        assert bad == 0 and completed == self.expected, (completed, bad, self.expected)
        return Round(n, lat, submit_s, total, cpu)

    def single(self, n: int, helpers: dict[str, int]) -> Round:
        return self._round(n, [c.submit for c in self.clients], 1, helpers)

    def paced(self, n: int, rate: float, helpers: dict[str, int]) -> Round:
        return self._round(n, [c.submit for c in self.clients], 1, helpers, rate)

    def batch(self, n: int, helpers: dict[str, int]) -> Round:
        return self._round(n, [c.submit_batch for c in self.batchers], self.args.batch_size, helpers)

    def check_events(self) -> dict[str, Any]:
        """Every task got its terminal event, none out of order, none twice."""
        stats = self.receiver.stats()
        assert stats["terminal"] >= self.expected and not stats["disordered"], stats
        return stats

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.stack is not None:
            self.stack.stop()
        support.drop_database(self.dbname)

    def dump_logs(self) -> None:
        for name, proc in (self.stack.procs.items() if self.stack else []):
            print(f"----- {name} log (tail)\n{proc.text()[-3000:]}", file=sys.stderr)


# --------------------------------------------------------------------------- bare Celery

class CeleryClient:
    """One submitting client: its own app, since the Redis result consumer is not shared between threads."""

    def __init__(self, queue: str, url: str) -> None:
        self.app = make_baseline_app(support.REDIS_URL, queue)
        self.task = self.app.tasks[BASELINE_TASK]
        self.url = url
        self.results: list[Any] = []
        self.sent: list[Any] = []

    def submit(self, size: int) -> int:
        self.results.append(self.task.delay(self.url))
        return 1

    def collect(self, errors: list[BaseException]) -> None:
        try:
            for res in self.results:
                assert res.get(timeout=DONE_TIMEOUT_S) == 200
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        self.sent.extend(self.results)
        self.results = []


class BareCelery:
    """`--workers` bare Celery workers with one pool kind on a fresh queue."""

    def __init__(self, prefix: str, logdir: Path, args: argparse.Namespace, url: str, pool: str, name: str) -> None:
        self.args, self.url, self.pool = args, url, pool
        self.queue = f"{prefix}-{name}"
        concurrency = str(os.cpu_count() or 2) if pool == "prefork" else str(args.concurrency)
        env = {**os.environ, "BENCH_CELERY_BROKER": support.REDIS_URL, "BENCH_CELERY_QUEUE": self.queue,
               "BENCH_CELERY_POOL": pool, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        celery_bin = str(Path(sys.executable).parent / "celery")
        self.argv = [celery_bin, "-A", "bench.throughput:baseline", "worker", "-P", pool, "-c", concurrency,
                     "-Q", self.queue, "--without-gossip", "--without-mingle", "-l", "INFO"]
        self.env, self.logdir = env, logdir
        self.procs: list[support.Proc] = []
        self.clients: list[CeleryClient] = []

    def start(self) -> None:
        for i in range(self.args.workers):
            proc = support.Proc([*self.argv, "-n", f"{self.queue}-{i}@%h"], self.env,
                                self.logdir / f"celery-{self.pool}-{i}.log")
            self.procs.append(proc)
            support.wait_for(lambda p=proc: "ready." in p.text() or p.popen.poll() is not None, 60,  # type: ignore[misc]
                             what="celery worker ready")
            assert proc.popen.poll() is None, proc.text()[-3000:]
        self.clients = [CeleryClient(self.queue, self.url) for _ in range(self.args.k)]
        self.run(WARMUP_EACH * self.args.k, {})

    def run(self, n: int, helpers: dict[str, int], rate: float | None = None) -> Round:
        groups = {("celery" if len(self.procs) == 1 else f"celery{i}"): p.popen.pid for i, p in enumerate(self.procs)}
        cpu0 = cpu_sample({**groups, **helpers})
        submits: list[Callable[[int], int]] = [c.submit for c in self.clients]
        lat, t0, submit_s = run_paced(n, submits, rate) if rate else run_clients(n, submits)
        errors: list[BaseException] = []
        threads = [threading.Thread(target=c.collect, args=(errors,), daemon=True) for c in self.clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = time.perf_counter() - t0
        cpu = cpu_sample({**groups, **helpers}).minus(cpu0)
        if errors:
            raise errors[0]
        return Round(n, lat, submit_s, total, cpu)

    def stop(self) -> None:
        for c in self.clients:
            for res in c.sent:
                res.forget()
            c.app.close()
        for proc in self.procs:
            proc.stop()

    def dump_logs(self) -> None:
        for i, proc in enumerate(self.procs):
            print(f"----- celery-{self.pool}-{i} log (tail)\n{proc.text()[-3000:]}", file=sys.stderr)


# --------------------------------------------------------------------------- target, report, main

def serve_target() -> None:
    """The no-op HTTP target (run in its own process so that it does not share the clients' GIL)."""
    from tests.http_target import Target, json_reply

    target = Target()
    target.on(NOOP_PATH, json_reply({}))
    target.seen = collections.deque(maxlen=0)  # type: ignore[assignment]  # no record of thousands of calls
    print(f"target listening on {target.url}", flush=True)
    threading.Event().wait()


def report(args: argparse.Namespace, results: dict[str, list[Round]], events: dict[str, Any] | None) -> None:
    print(f"\nthroughput: N={args.n} no-op tasks per round (batch path: {args.batch_n}), {args.rounds} interleaved "
          f"rounds, K={args.k} closed-loop clients; figures are median [min-max] over the rounds")
    print(f"taskexec: {args.workers} integration worker(s) x {args.concurrency} threads, submit auth {args.auth}, "
          f"done = terminal event of every task received by the orchestrator; batch path: {args.batch_clients} "
          f"clients x {args.batch_size} tasks per request")
    print(f"paced paths: the K clients offer {args.paced_rate:g} submissions/s together (open loop, {args.paced_n} "
          f"per round; latency from when each was due); celery-paced is prefork")
    print(f"bare Celery: acks_late, reject_on_worker_lost, prefetch 1, Redis broker + result backend; prefork -c "
          f"{os.cpu_count()}, threads -c {args.concurrency} + event-loop waker; done = every result got")
    head = f"{'path':<16} {'e2e tasks/s':>22} {'submits/s':>22} {'submit p50 ms':>22} {'submit p99 ms':>22}"
    print(head)
    print("-" * len(head))
    for name, rounds in results.items():
        print(f"{name:<16} {spread([r.tasks_per_s() for r in rounds]):>22} "
              f"{spread([r.submits_per_s() for r in rounds]):>22} "
              f"{spread([median(r.submit_ms) for r in rounds]):>22} "
              f"{spread([pct(r.submit_ms, 99) for r in rounds]):>22}")
    print("\nCPU ms per task, per process (median [min-max]):")
    for name, rounds in results.items():
        print(f" {name}:")
        for line in cpu_lines([r.cpu for r in rounds], rounds[0].n, COUNTED, indent="   "):
            print(line)
    if events:
        print(f"\norchestrator: {events['events']} events received for {events['tasks']} tasks, {events['terminal']} "
              f"terminal, {events['duplicates']} duplicates, out of order: {len(events['disordered'])}")
    celery = {k: median([r.tasks_per_s() for r in v]) for k, v in results.items()
              if k.startswith("celery") and k != "celery-paced"}
    if not celery or "taskexec" not in results and "taskexec-batch" not in results:
        return
    fair = max(celery, key=lambda k: celery[k])
    base = celery[fair]
    print(f"\nfair bare Celery = {fair} (the faster): {base:.1f} tasks/s")
    if "taskexec" in results:
        tel = results["taskexec"]
        ratios = [r.tasks_per_s() / base for r in tel]
        cpu = [counted_total(r.cpu, r.n, COUNTED) for r in tel]
        p99 = [pct(r.submit_ms, 99) for r in tel]
        ratio, cpu_med, p99_med = median(ratios), median(cpu), median(p99)
        print(f"target e2e >= 0.5 x fair bare Celery:      {spread(ratios, '{:.2f}')}  "
              f"{'met' if ratio >= 0.5 else 'NOT met'} (0.8 would need {0.8 * base:.0f} tasks/s)")
        print(f"target CPU per task <= 10 ms:              {spread(cpu)} ms  {'met' if cpu_med <= 10 else 'NOT met'}")
        print(f"target submit p99 <= 50 ms at K={args.k}:       {spread(p99)} ms  "
              f"{'met' if p99_med <= 50 else 'NOT met'} (closed loop: p50 ~ K / submits per s)")
    if "taskexec-paced" in results:
        paced = [pct(r.submit_ms, 99) for r in results["taskexec-paced"]]
        celery_paced = results.get("celery-paced")
        versus = (f"; bare Celery delay() {spread([pct(r.submit_ms, 99) for r in celery_paced])} ms"
                  if celery_paced else "")
        print(f"target submit p99 <= 50 ms, K={args.k} offering {args.paced_rate:g}/s: {spread(paced)} ms  "
              f"{'met' if median(paced) <= 50 else 'NOT met'}{versus}")
    if "taskexec-batch" in results:
        bat = results["taskexec-batch"]
        sub = [r.submits_per_s() / base for r in bat]
        e2e = [r.tasks_per_s() / base for r in bat]
        print(f"target batch >= 1 x fair bare Celery:      accepted {spread(sub, '{:.2f}')} "
              f"{'met' if median(sub) >= 1 else 'NOT met'}; end to end {spread(e2e, '{:.2f}')} "
              f"{'met' if median(e2e) >= 1 else 'NOT met'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=600, help="tasks per round (single submits)")
    parser.add_argument("-k", type=int, default=16, help="concurrent submitting clients")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per path")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--workers", type=int, default=1, help="worker processes (each path)")
    parser.add_argument("--concurrency", type=int, default=Settings.model_fields["integration_concurrency"].default,
                        help="threads per worker process (threads pools); default: the integration pool's shipped "
                             "default (TEL_INTEGRATION_CONCURRENCY)")
    parser.add_argument("--batch-n", type=int, default=1200, help="tasks per round of the batch path")
    parser.add_argument("--batch-size", type=int, default=200, help="tasks per batch request")
    parser.add_argument("--batch-clients", type=int, default=2, help="clients of the batch path")
    parser.add_argument("--paced-rate", type=float, default=40.0,
                        help="submissions/s offered by the K clients together on the paced paths (open loop)")
    parser.add_argument("--paced-n", type=int, default=400, help="tasks per round of the paced paths")
    parser.add_argument("--auth", choices=("apikey", "jwt"), default="apikey", help="credential of the clients")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra setting for the router and workers, e.g. TEL_ROUTER_WORKERS=3 (repeatable)")
    parser.add_argument("--py-spy", metavar="DIR", default=None,
                        help="sample the router and workers with py-spy during the taskexec rounds")
    parser.add_argument("--serve-target", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_target:
        serve_target()
        return 0
    print(machine(), flush=True)
    prefix = "bench" + uuid.uuid4().hex[:8]
    logdir = Path(tempfile.mkdtemp(prefix="tel-throughput-"))
    target, url = start_helper([sys.executable, __file__, "--serve-target"], logdir / "target.log", "target")
    url += NOOP_PATH
    receiver, receiver_url = start_helper([sys.executable, str(ROOT / "bench" / "receiver.py")],
                                          logdir / "receiver.log", "receiver")
    helpers = {"target": target.popen.pid, "receiver": receiver.popen.pid}
    celery = {p: BareCelery(prefix, logdir, args, url, "prefork" if p == "celery-paced" else p.split("-", 1)[1], p)
              for p in args.paths if p.startswith("celery")}
    wanted = any(p.startswith("taskexec") for p in args.paths)
    tel = Taskexec(prefix, logdir, args, url, receiver_url) if wanted else None
    results: dict[str, list[Round]] = {p: [] for p in args.paths}
    started: list[Any] = []
    events = None
    try:
        for path in (*celery.values(), tel):
            if path is not None:
                started.append(path)
                path.start()
        spies = start_profilers(args.py_spy, tel.pids()) if tel and args.py_spy else []
        for i in range(args.rounds):
            order = args.paths[i % len(args.paths):] + args.paths[: i % len(args.paths)]
            for p in order:
                if p == "celery-paced":
                    results[p].append(celery[p].run(args.paced_n, helpers, args.paced_rate))
                elif p in celery:
                    results[p].append(celery[p].run(args.n, helpers))
                elif p == "taskexec-paced" and tel:
                    results[p].append(tel.paced(args.paced_n, args.paced_rate, helpers))
                elif p == "taskexec" and tel:
                    results[p].append(tel.single(args.n, helpers))
                elif p == "taskexec-batch" and tel:
                    results[p].append(tel.batch(args.batch_n, helpers))
                r = results[p][-1]
                print(f"round {i + 1} {p:<16} {r.tasks_per_s():8.1f} tasks/s  {r.submits_per_s():8.1f} submits/s  "
                      f"CPU {counted_total(r.cpu, r.n, COUNTED):5.1f} ms/task", flush=True)
        for spy in spies:
            spy.stop(sig=2)
        if tel:
            events = tel.check_events()
    except BaseException:
        for path in started:
            path.dump_logs()
        raise
    finally:
        for path in started:
            path.stop()
        delete_keys(prefix)
        receiver.stop()
        target.stop()
    report(args, results, events)
    print(f"logs in {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
