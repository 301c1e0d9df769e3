"""Soak: the whole stack at moderate load for ten minutes, watching for leaks (``make soak``; not in CI).

Usage: python bench/soak.py [--minutes 10] [--automated 1.0] [--integration 4.0] [--manual 0.2]
       [--failing 0.1] [--sample 15] [--integration-hosts N]
Needs the test services (``make setup``). Started here and stopped at the end: a fresh database, a
Redis broker of its own (AOF with `appendfsync everysec`, as compose.yaml ships it), the router, one
worker per pool (automated concurrency 2 with its warm container pool, integration 4, manual 2) and the
scheduler, an orchestrator receiver and local HTTP targets answering at once.

Load: automated hello-world and integration GETs at the given rates (tasks/s), manual tasks claimed and
completed over the API by a simulated operator, and deliberately failing tasks (alternately an automated
task whose code raises, and an integration call answered 422), all with `maxRetries: 0`. The load must
fit the stack's own limits: the integration calls are spread over enough target hosts (local servers on
their own ports; the rate limit is per host and port) that each host gets at most 60 % of its limit
(`TEL_RATE_LIMIT_DEFAULT`, 100/min), and the soak refuses to start otherwise. Every --sample seconds
the resident memory (RSS summed over each worker's process group), its process count, its open file
descriptors and the number of sandbox containers are recorded. After the load stops and the backlog
drains, the run fails (exit 1) if:

* any task did not end in the state it was built to reach: COMPLETED (with no error) for the normal
  ones, FAILED with `NON_ZERO_EXIT` / `INTEGRATION_ERROR` (and no retry) for the deliberately failing;
* any task has no terminal event at the receiver, or the API refused a submission or an operator action;
* a worker's memory grew by more than --max-growth (fraction, default 0.25) plus 24 MiB between the
  warm-up sample (after --warmup of the run) and the mean of the last three samples;
* a worker's process count at the end exceeds its warm-up value, or its open descriptors grew by more
  than the same fraction plus 16 (one leaked descriptor per task would be thousands);
* sandbox containers outnumber the warm pool while idle, or any is left once the workers are stopped;
* any of our processes is still alive after the stop.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import psutil
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.containers import LABEL_MANAGED, LABEL_WORKER  # noqa: E402
from tests import support  # noqa: E402
from tests.faults.services import RedisServer  # noqa: E402
from tests.http_target import Target, json_reply  # noqa: E402

HELLO = "def main(input):\n    return {'greeting': 'Hello, ' + input['name']}\n"
RAISE = "def main(input):\n    raise ValueError('deliberate failure')\n"
NO_RETRY = {"maxRetries": 0, "retryInterval": 100, "backoffMultiplier": 1.0}
HEADROOM = 0.6  # the share of a host's rate limit the soak offers it
OUTPUT_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
POOLS = {"automated": 2, "integration": 4, "manual": 2}


@dataclass
class Sample:
    at: float
    rss: dict[str, int]  # bytes per worker process group
    procs: dict[str, int]
    fds: dict[str, int]
    containers: int


@dataclass(frozen=True)
class Kind:
    """What a submitted task is, and the state it was built to reach."""

    name: str
    definition: str
    status: str
    code: str | None = None


@dataclass
class Load:
    submitted: list[str] = field(default_factory=list)
    kinds: dict[str, Kind] = field(default_factory=dict)  # task id -> its kind
    refused: int = 0
    completed_manual: int = 0
    errors: list[str] = field(default_factory=list)


def integration_hosts(calls_per_s: float, limit: str) -> int:
    """How many target hosts keep each one at most HEADROOM of its rate limit (the limit is per host:port)."""
    from taskexec.core.integration_spec import parse_rate

    count, window = parse_rate(limit)
    return max(1, math.ceil(calls_per_s * 60.0 / (count * 60.0 / window * HEADROOM)))


def group(pid: int) -> list[psutil.Process]:
    """Every live process of the session started by Proc (start_new_session: sid == pid)."""
    out = []
    for p in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):  # gone between the listing and the look
            if os.getsid(p.pid) == pid:
                out.append(p)
    return out


def ours(api: Any, pids: set[int]) -> int:
    """Sandbox containers created by one of `pids` (labels say host:pid); other engines' users are ignored."""
    listed = api.containers.list(all=True, sparse=True, filters={"label": [LABEL_MANAGED]})
    return sum(1 for c in listed if _worker_pid(c.attrs["Labels"].get(LABEL_WORKER, "")) in pids)


def _worker_pid(label: str) -> int:
    """The pid in a container's worker label (`host:pid`) when the host is this one; 0 for anything else."""
    host, _, pid = label.rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else 0


def measure(procs: dict[str, support.Proc], api: Any, seen: set[int]) -> Sample:
    """One sample; `seen` collects every pid of the watched groups (for the container count)."""
    rss, count, fds = {}, {}, {}
    for name, proc in procs.items():
        members = group(proc.popen.pid)
        seen.update(p.pid for p in members)
        total, nfd = 0, 0
        for p in members:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
                nfd += p.num_fds()
        rss[name], count[name], fds[name] = total, len(members), nfd
    return Sample(time.monotonic(), rss, count, fds, ours(api, seen))


class Driver:
    """Submits each kind of task at a fixed rate and plays the human operator."""

    def __init__(self, url: str, target_urls: list[str], rates: dict[str, float]) -> None:
        from taskexec.core.config import Settings
        from taskexec.store.auth import issue_token

        cfg = Settings(TEL_JWT_SECRET=support.JWT_SECRET)  # type: ignore[call-arg]
        self.url = url
        self.admin = {"Authorization": "Bearer " + issue_token(cfg, "soak", ["admin"], ttl=7200)}
        self.operator = {"Authorization": "Bearer " + issue_token(cfg, "olga", ["operator", "reviewers"], ttl=7200)}
        self.rates = rates
        self.load = Load()
        self.offered: Counter[str] = Counter()  # submissions answered during the run, per stream
        self.stop = threading.Event()
        self._local = threading.local()
        self._lock = threading.Lock()
        self.kinds = self._define(target_urls)

    @property
    def http(self) -> requests.Session:
        """One session per thread (the submitters run in a pool). A request on a keep-alive connection the
        router has just closed fails with a reset: it is sent again, as a client would (submissions carry
        an Idempotency-Key, so a repeat creates nothing twice; a repeated claim returns the claim)."""
        if not hasattr(self._local, "http"):
            session = requests.Session()
            retry = Retry(total=3, connect=3, read=3, status=0, other=0, allowed_methods=None, backoff_factor=0.1)
            session.mount("http://", HTTPAdapter(max_retries=retry))
            self._local.http = session
        return self._local.http

    def _post(self, path: str, body: Any, headers: dict[str, str]) -> requests.Response:
        return self.http.post(f"{self.url}/api/v1{path}", json=body, headers=headers, timeout=30)

    def _define(self, target_urls: list[str]) -> dict[str, Any]:
        """The definitions, and per load stream the kinds it submits in turn."""
        hosts = range(len(target_urls))
        defs = [
            {"id": "soak-auto", "name": "soak-auto", "type": "AUTOMATED",
             "executionConfig": {"runtime": "python", "code": HELLO}},
            {"id": "soak-auto-fail", "name": "soak-auto-fail", "type": "AUTOMATED", "retryPolicy": NO_RETRY,
             "executionConfig": {"runtime": "python", "code": RAISE}},
            *({"id": f"soak-http-{i}", "name": f"soak-http-{i}", "type": "INTEGRATION",
               "executionConfig": {"request": {"method": "GET", "url": target_urls[i] + "/ok"}}} for i in hosts),
            *({"id": f"soak-http-bad-{i}", "name": f"soak-http-bad-{i}", "type": "INTEGRATION", "retryPolicy": NO_RETRY,
               "executionConfig": {"request": {"method": "GET", "url": target_urls[i] + "/bad"}}} for i in hosts),
            {"id": "soak-human", "name": "soak-human", "type": "MANUAL", "outputSchema": OUTPUT_SCHEMA,
             "executionConfig": {"assignment": {"role": "reviewers"}}},
        ]
        for d in defs:
            r = self._post("/tasks/definitions", d, self.admin)
            assert r.status_code == 201, r.text
        auto_fail = Kind("automated-fail", "soak-auto-fail", "FAILED", "NON_ZERO_EXIT")
        # alternate automated and integration failures; the integration ones round-robin over the hosts
        failing = [k for i in hosts
                   for k in (auto_fail, Kind("integration-fail", f"soak-http-bad-{i}", "FAILED", "INTEGRATION_ERROR"))]
        return {
            "automated": itertools.cycle([Kind("automated", "soak-auto", "COMPLETED")]),
            "integration": itertools.cycle([Kind("integration", f"soak-http-{i}", "COMPLETED") for i in hosts]),
            "manual": itertools.cycle([Kind("manual", "soak-human", "COMPLETED")]),
            "failing": itertools.cycle(failing),
        }

    def _submit(self, stream: str, kind: Kind, until: float) -> None:
        body = {"doc": "x"} if kind.name == "manual" else {"name": "soak"} if kind.name.startswith("automated") else {}
        key = {"Idempotency-Key": f"soak-{uuid.uuid4().hex}"}
        try:
            r = self._post("/tasks", {"taskDefinitionId": kind.definition, "input": body}, {**self.admin, **key})
        except requests.RequestException as exc:
            with self._lock:
                self.load.errors.append(f"submit {kind.definition}: {exc}")
            return
        with self._lock:
            if time.monotonic() <= until:
                self.offered[stream] += 1
            if r.status_code == 201:
                task_id = r.json()["id"]
                self.load.submitted.append(task_id)
                self.load.kinds[task_id] = kind
            else:
                self.load.refused += 1
                self.load.errors.append(f"submit {kind.definition}: {r.status_code} {r.text[:200]}")

    def _work_inbox(self) -> None:
        r = self.http.get(f"{self.url}/api/v1/inbox", headers=self.operator, timeout=30)
        if r.status_code != 200:
            self.load.errors.append(f"inbox: {r.status_code}")
            return
        for item in r.json()["items"]:
            c = self._post(f"/tasks/{item['id']}/claim", None, self.operator)
            done = self._post(f"/tasks/{item['id']}/complete", {"output": {"ok": True}}, self.operator)
            if done.status_code == 409 and done.json()["error"]["details"].get("status") == "COMPLETED":
                done.status_code = 200  # a repeat (after a reset) of a completion that had gone through
            if c.status_code == 200 and done.status_code == 200:
                self.load.completed_manual += 1
            else:
                self.load.errors.append(f"claim/complete {item['id']}: {c.status_code}/{done.status_code} "
                                        f"{done.text[:200]}")

    def run(self, seconds: float) -> None:
        """Open loop: each submission is due at its time, whatever earlier ones took (a pool of submitters);
        the operator works the inbox every 2 s in a thread of its own."""
        start = time.monotonic()
        until = start + seconds
        due = {k: start for k in self.rates}
        operator = threading.Thread(target=self._operate, args=(until,), daemon=True)
        operator.start()
        with ThreadPoolExecutor(max_workers=8) as submitters:
            while not self.stop.is_set() and (now := time.monotonic()) < until:
                for stream, rate in self.rates.items():
                    while rate > 0 and now >= due[stream]:
                        due[stream] += 1 / rate
                        submitters.submit(self._submit, stream, next(self.kinds[stream]), until)
                time.sleep(max(0.0, min(due.values()) - time.monotonic()))
        operator.join()

    def _operate(self, until: float) -> None:
        while not self.stop.is_set() and time.monotonic() < until:
            try:
                self._work_inbox()
            except requests.RequestException as exc:
                self.load.errors.append(f"operator: {exc}")
            self.stop.wait(2.0)

    def shortfall(self, seconds: float, tolerance: float = 0.95) -> list[str]:
        """Streams whose answered submissions fell below `tolerance` of the rate asked for: the run then does
        not show what it claims to (the machine could not carry the load generator and the stack)."""
        return [f"{stream}: {self.offered[stream] / seconds:.2f}/s offered, {rate:g}/s asked"
                for stream, rate in self.rates.items()
                if rate > 0 and self.offered[stream] < rate * seconds * tolerance]

    def drain(self, db: str, timeout: float = 120) -> dict[str, int]:
        """Keep working the inbox until every submitted task is terminal (or the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._work_inbox()
            except requests.RequestException as exc:
                self.load.errors.append(f"operator: {exc}")
            counts = status_counts(db)
            if sum(v for k, v in counts.items() if k not in TERMINAL) == 0 or time.monotonic() > deadline:
                return counts
            time.sleep(1)


def unexpected_states(db: str, kinds: dict[str, Kind]) -> dict[str, list[tuple[str, str, str | None, int]]]:
    """Per kind, the tasks that did not end as they were built to: (id, status, error code, retries)."""
    import psycopg

    with psycopg.connect(support.db_url(db).replace("+psycopg", "")) as conn:
        rows = conn.execute("SELECT id, status, error->>'code', retry_count FROM task_instances "
                            "WHERE id = ANY(%s)", (list(kinds),)).fetchall()
    found = {str(r[0]): (str(r[1]), r[2], int(r[3])) for r in rows}
    wrong: dict[str, list[tuple[str, str, str | None, int]]] = {}
    for task_id, kind in kinds.items():
        status, code, retries = found.get(task_id, ("MISSING", None, 0))
        if (status, code, retries) != (kind.status, kind.code, 0):
            wrong.setdefault(kind.name, []).append((task_id, status, code, retries))
    return wrong


def status_counts(db: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(support.db_url(db).replace("+psycopg", "")) as conn:
        rows = conn.execute("SELECT status, count(*) FROM task_instances GROUP BY status").fetchall()
    return {str(s): int(n) for s, n in rows}


def verdict(samples: list[Sample], warm: Sample, max_growth: float) -> list[str]:
    problems = []
    tail = samples[-3:]
    for name in warm.rss:
        end_rss = sum(s.rss[name] for s in tail) / len(tail)
        if end_rss > warm.rss[name] * (1 + max_growth) + 24 * 2**20:
            problems.append(f"{name}: memory {warm.rss[name] / 2**20:.0f} -> {end_rss / 2**20:.0f} MiB")
        if samples[-1].procs[name] > warm.procs[name]:
            problems.append(f"{name}: processes {warm.procs[name]} -> {samples[-1].procs[name]}")
        if samples[-1].fds[name] > warm.fds[name] * (1 + max_growth) + 16:  # one leaked fd per task would be 1000s
            problems.append(f"{name}: open fds {warm.fds[name]} -> {samples[-1].fds[name]}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--automated", type=float, default=1.0, help="automated tasks/s")
    parser.add_argument("--integration", type=float, default=4.0, help="integration tasks/s")
    parser.add_argument("--manual", type=float, default=0.2, help="manual tasks/s")
    parser.add_argument("--failing", type=float, default=0.1, help="deliberately failing tasks/s")
    parser.add_argument("--integration-hosts", type=int, default=0,
                        help="target hosts for the integration calls (default: enough for the rate limit)")
    parser.add_argument("--sample", type=float, default=15, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the run before the baseline")
    parser.add_argument("--max-growth", type=float, default=0.25)
    args = parser.parse_args()

    from taskexec.core.config import Settings
    from taskexec.store.migrate import upgrade

    # the load must fit the stack's own limits: enough target hosts that none gets more than HEADROOM of its limit
    limit = str(Settings.model_fields["rate_limit_default"].default)  # the soak's stack sets no other
    calls_per_s = args.integration + args.failing / 2
    needed = integration_hosts(calls_per_s, limit)
    hosts = args.integration_hosts or needed
    per_host = calls_per_s * 60 / hosts
    if hosts < needed:
        print(f"soak: {calls_per_s:g} integration calls/s over {hosts} hosts is {per_host:.0f}/min per host, "
              f"above {HEADROOM:.0%} of the rate limit {limit}: the load would not fit its own limits "
              f"(at least {needed} hosts)", file=sys.stderr)
        return 2

    prefix = "soak" + uuid.uuid4().hex[:8]
    logdir = Path(tempfile.mkdtemp(prefix="tel-soak-"))
    dbname = f"soak_{prefix}"
    with support.admin_conn() as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    upgrade(support.db_url(dbname))
    broker = RedisServer(logdir)  # a Redis of its own, configured as compose.yaml ships it (AOF, everysec)
    broker.start()
    env = {**support.base_env(dbname, prefix), "CELERY_BROKER_URL": broker.url,
           "TEL_INTEGRATION_KEY_PREFIX": f"tel:soak:{prefix}",
           # the targets are local servers: open loopback to integration calls where an egress guard applies
           "TEL_INTEGRATION_ALLOWED_NETWORKS": "127.0.0.0/8"}
    receiver, targets = support.Receiver(), [Target() for _ in range(hosts)]
    env["WORKFLOW_ORCHESTRATOR_URL"] = receiver.url
    for t in targets:
        t.on("/ok", json_reply({"ok": True}))
        t.on("/bad", json_reply({"error": "deliberately unprocessable"}, status=422))
    target_urls = [t.url for t in targets]
    api = docker.from_env(timeout=60)
    stack = support.Stack(env, logdir)
    problems: list[str] = []
    samples: list[Sample] = []
    seen: set[int] = set()
    try:
        stack.start_router()
        for pool, conc in POOLS.items():
            stack.start_worker(pool, concurrency=conc)
        stack.procs["beat"] = support.Proc(support.taskexec("beat"), stack.worker_env(), logdir / "beat.log")
        workers = {k: v for k, v in stack.procs.items() if k in POOLS or k == "beat"}
        watched = {"router": stack.procs["router"], **workers}
        driver = Driver(stack.url, target_urls, {"automated": args.automated, "integration": args.integration,
                                                 "manual": args.manual, "failing": args.failing})
        seconds = args.minutes * 60
        load = threading.Thread(target=driver.run, args=(seconds,), daemon=True)
        t0 = time.monotonic()
        load.start()
        print(f"soak {args.minutes:g} min, rates/s auto={args.automated} http={args.integration} "
              f"manual={args.manual} failing={args.failing}; integration calls over {hosts} target hosts, "
              f"{per_host:.0f}/min each (limit {limit}); logs in {logdir}", flush=True)
        print(f"{'t s':>6} {'tasks':>6} " + " ".join(f"{n[:10]:>18}" for n in watched) + f" {'ctrs':>5}",
              flush=True)
        while load.is_alive():
            load.join(args.sample)
            s = measure(watched, api, seen)
            samples.append(s)
            cells = " ".join(f"{s.rss[n] / 2**20:7.0f}M {s.procs[n]:3d}p {s.fds[n]:4d}f" for n in watched)
            print(f"{s.at - t0:6.0f} {len(driver.load.submitted):6d} {cells} {s.containers:5d}", flush=True)
        counts = driver.drain(dbname)
        problems += [f"the load generator fell behind: {x}" for x in driver.shortfall(seconds)]
        time.sleep(args.sample)
        samples.append(end := measure(watched, api, seen))
        warm = next(s for s in samples if s.at - t0 >= seconds * args.warmup)
        problems += verdict(samples, warm, args.max_growth)
        stuck = sum(v for k, v in counts.items() if k not in TERMINAL)
        if stuck:
            problems.append(f"{stuck} tasks not terminal: {counts}")
        for name, wrong in unexpected_states(dbname, driver.load.kinds).items():
            built = next(k for k in driver.load.kinds.values() if k.name == name)
            problems.append(f"{len(wrong)} {name} tasks did not end {built.status}"
                            f"{' ' + built.code if built.code else ''}: first {wrong[:3]}")
        done = {e["data"]["taskId"] for e in receiver.received
                if e["type"] in ("task.instance.completed", "task.instance.failed", "task.instance.cancelled")}
        missing = len(set(driver.load.submitted) - done)
        if missing:
            problems.append(f"{missing} tasks without a terminal event at the receiver")
        if end.containers > 2:
            problems.append(f"{end.containers} sandbox containers while idle (warm pool is 2)")
        if driver.load.errors:
            problems.append(f"{len(driver.load.errors)} API errors, first: {driver.load.errors[0]}")
        print("offered (answered during the run), tasks/s: " + ", ".join(
            f"{stream} {driver.offered[stream] / seconds:.2f} of {rate:g}" for stream, rate in driver.rates.items()))
        by_kind = Counter(k.name for k in driver.load.kinds.values())
        print(f"tasks: {len(driver.load.submitted)} submitted ({dict(sorted(by_kind.items()))}), {counts}, "
              f"manual completed by the operator: {driver.load.completed_manual}; "
              f"events at the receiver: {len(receiver.received)}")
    finally:
        pids = [p.pid for proc in stack.procs.values() for p in group(proc.popen.pid)]
        stack.stop()
        time.sleep(1)
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if alive:
            problems.append(f"processes alive after stop: {alive}")
        left = ours(api, seen | set(pids))
        if left:
            problems.append(f"{left} sandbox containers left after the workers stopped")
        receiver.close()
        for t in targets:
            t.close()
        broker.stop()
        support.drop_database(dbname)
    for p in problems:
        print("FAIL:", p)
    print("soak: " + ("FAILED" if problems else "passed (memory, processes, fds, containers and tasks all bounded)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
