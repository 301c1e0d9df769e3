"""Soak: the whole stack at moderate load for ten minutes, watching for leaks (``make soak``; not in CI).

Usage: python bench/soak.py [--minutes 10] [--automated 1.0] [--integration 4.0] [--manual 0.2] [--sample 15]
Needs the test services (``make setup``). Started here and stopped at the end: a fresh database, the
router, one worker per pool (automated concurrency 2 with its warm container pool, integration 4,
manual 2) and the scheduler, an orchestrator receiver and a local HTTP target answering at once.

Load: automated hello-world and integration GETs at the given rates (tasks/s), manual tasks claimed and
completed over the API by a simulated operator. Every --sample seconds the resident memory (RSS summed
over each worker's process group), its process count, its open file descriptors and the number of
sandbox containers are recorded. After the load stops and the backlog drains, the run fails (exit 1) if:

* a worker's memory grew by more than --max-growth (fraction, default 0.25) plus 24 MiB between the
  warm-up sample (after --warmup of the run) and the mean of the last three samples;
* a worker's process count at the end exceeds its warm-up value, or its open descriptors grew by more
  than the same fraction plus 16 (one leaked descriptor per task would be thousands);
* any task is not terminal, or any terminal task has no terminal event at the receiver;
* sandbox containers outnumber the warm pool while idle, or any is left once the workers are stopped;
* any of our processes is still alive after the stop.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.containers import LABEL_MANAGED, LABEL_WORKER  # noqa: E402
from tests import support  # noqa: E402
from tests.http_target import Target, json_reply  # noqa: E402

HELLO = "def main(input):\n    return {'greeting': 'Hello, ' + input['name']}\n"
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


@dataclass
class Load:
    submitted: list[str] = field(default_factory=list)
    refused: int = 0
    completed_manual: int = 0
    errors: list[str] = field(default_factory=list)


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
    return sum(1 for c in listed if int(c.attrs["Labels"].get(LABEL_WORKER, ":0").rsplit(":", 1)[1]) in pids)


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
    """Submits the three kinds of task at fixed rates and plays the human operator."""

    def __init__(self, url: str, target_url: str, rates: dict[str, float]) -> None:
        from taskexec.auth import issue_token
        from taskexec.config import Settings

        cfg = Settings(TEL_JWT_SECRET=support.JWT_SECRET)  # type: ignore[call-arg]
        self.url = url
        self.admin = {"Authorization": "Bearer " + issue_token(cfg, "soak", ["admin"], ttl=7200)}
        self.operator = {"Authorization": "Bearer " + issue_token(cfg, "olga", ["operator", "reviewers"], ttl=7200)}
        self.rates = rates
        self.load = Load()
        self.stop = threading.Event()
        self.http = requests.Session()
        self._define(target_url)

    def _post(self, path: str, body: Any, headers: dict[str, str]) -> requests.Response:
        return self.http.post(f"{self.url}/api/v1{path}", json=body, headers=headers, timeout=30)

    def _define(self, target_url: str) -> None:
        defs = [
            {"id": "soak-auto", "name": "soak-auto", "type": "AUTOMATED",
             "executionConfig": {"runtime": "python", "code": HELLO}},
            {"id": "soak-http", "name": "soak-http", "type": "INTEGRATION",
             "executionConfig": {"request": {"method": "GET", "url": target_url}}},
            {"id": "soak-human", "name": "soak-human", "type": "MANUAL", "outputSchema": OUTPUT_SCHEMA,
             "executionConfig": {"assignment": {"role": "reviewers"}}},
        ]
        for d in defs:
            r = self._post("/tasks/definitions", d, self.admin)
            assert r.status_code == 201, r.text

    def _submit(self, def_id: str, body: Any) -> None:
        r = self._post("/tasks", {"taskDefinitionId": def_id, "input": body}, self.admin)
        if r.status_code == 201:
            self.load.submitted.append(r.json()["id"])
        else:
            self.load.refused += 1
            self.load.errors.append(f"submit {def_id}: {r.status_code} {r.text[:200]}")

    def _work_inbox(self) -> None:
        r = self.http.get(f"{self.url}/api/v1/inbox", headers=self.operator, timeout=30)
        if r.status_code != 200:
            self.load.errors.append(f"inbox: {r.status_code}")
            return
        for item in r.json()["items"]:
            c = self._post(f"/tasks/{item['id']}/claim", None, self.operator)
            done = self._post(f"/tasks/{item['id']}/complete", {"output": {"ok": True}}, self.operator)
            if c.status_code == 200 and done.status_code == 200:
                self.load.completed_manual += 1

    def run(self, seconds: float) -> None:
        start = time.monotonic()
        due = {k: start for k in self.rates}
        next_inbox = start
        while not self.stop.is_set() and (now := time.monotonic()) - start < seconds:
            for kind, rate in self.rates.items():
                if rate > 0 and now >= due[kind]:
                    due[kind] += 1 / rate
                    {"automated": lambda: self._submit("soak-auto", {"name": "soak"}),
                     "integration": lambda: self._submit("soak-http", {}),
                     "manual": lambda: self._submit("soak-human", {"doc": "x"})}[kind]()
            if now >= next_inbox:
                next_inbox += 2.0
                self._work_inbox()
            time.sleep(max(0.0, min(due.values()) - time.monotonic()))

    def drain(self, db: str, timeout: float = 120) -> dict[str, int]:
        """Keep working the inbox until every submitted task is terminal (or the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            self._work_inbox()
            counts = status_counts(db)
            if sum(v for k, v in counts.items() if k not in TERMINAL) == 0 or time.monotonic() > deadline:
                return counts
            time.sleep(1)


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
    parser.add_argument("--sample", type=float, default=15, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the run before the baseline")
    parser.add_argument("--max-growth", type=float, default=0.25)
    args = parser.parse_args()

    from taskexec.migrate import upgrade

    prefix = "soak" + uuid.uuid4().hex[:8]
    logdir = Path(tempfile.mkdtemp(prefix="tel-soak-"))
    dbname = f"soak_{prefix}"
    with support.admin_conn() as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    upgrade(support.db_url(dbname))
    receiver, target = support.Receiver(), Target()
    target_url = target.on("/ok", json_reply({"ok": True}))
    api = docker.from_env(timeout=60)
    stack = support.Stack({**support.base_env(dbname, prefix), "WORKFLOW_ORCHESTRATOR_URL": receiver.url,
                           "TEL_INTEGRATION_KEY_PREFIX": f"tel:soak:{prefix}"}, logdir)
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
        driver = Driver(stack.url, target_url,
                        {"automated": args.automated, "integration": args.integration, "manual": args.manual})
        seconds = args.minutes * 60
        load = threading.Thread(target=driver.run, args=(seconds,), daemon=True)
        t0 = time.monotonic()
        load.start()
        print(f"soak {args.minutes:g} min, rates/s auto={args.automated} http={args.integration} "
              f"manual={args.manual}; logs in {logdir}", flush=True)
        print(f"{'t s':>6} {'tasks':>6} " + " ".join(f"{n[:10]:>18}" for n in watched) + f" {'ctrs':>5}",
              flush=True)
        while load.is_alive():
            load.join(args.sample)
            s = measure(watched, api, seen)
            samples.append(s)
            cells = " ".join(f"{s.rss[n] / 2**20:7.0f}M {s.procs[n]:3d}p {s.fds[n]:4d}f" for n in watched)
            print(f"{s.at - t0:6.0f} {len(driver.load.submitted):6d} {cells} {s.containers:5d}", flush=True)
        counts = driver.drain(dbname)
        time.sleep(args.sample)
        samples.append(end := measure(watched, api, seen))
        warm = next(s for s in samples if s.at - t0 >= seconds * args.warmup)
        problems += verdict(samples, warm, args.max_growth)
        stuck = sum(v for k, v in counts.items() if k not in TERMINAL)
        if stuck:
            problems.append(f"{stuck} tasks not terminal: {counts}")
        done = {e["data"]["taskId"] for e in receiver.received
                if e["type"] in ("task.instance.completed", "task.instance.failed", "task.instance.cancelled")}
        missing = len(set(driver.load.submitted) - done)
        if missing:
            problems.append(f"{missing} tasks without a terminal event at the receiver")
        if end.containers > 2:
            problems.append(f"{end.containers} sandbox containers while idle (warm pool is 2)")
        if driver.load.errors:
            problems.append(f"{len(driver.load.errors)} API errors, first: {driver.load.errors[0]}")
        print(f"tasks: {len(driver.load.submitted)} submitted, {counts}, manual completed by the operator: "
              f"{driver.load.completed_manual}; events at the receiver: {len(receiver.received)}")
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
        target.close()
        support.drop_database(dbname)
    for p in problems:
        print("FAIL:", p)
    print("soak: " + ("FAILED" if problems else "passed (memory, processes, fds, containers and tasks all bounded)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
