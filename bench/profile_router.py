"""Where the router spends its time per task: CPU and SQL per request, pyinstrument, py-spy summaries.

Usage:
  python bench/profile_router.py [-n 300] [--pyinstrument] [--auth apikey|jwt]
      In-process (Flask test client, one thread, dispatcher off) against a fresh database and the test
      Redis, with an orchestrator receiver: n x (submit, the pool's start and finish reports, the outbox
      pass delivering the task's three events) of a no-op INTEGRATION task.
      Prints per kind: CPU ms (this thread), SQL statements, PostgreSQL round trips (incl. BEGIN,
      COMMIT, pings; from libpq's trace) and function calls (Python and C: unlike CPU time, not disturbed
      by other load on the machine); with --batch N one POST /tasks/batch of N, per task; with
      --pyinstrument or --cprofile, where the time goes.
  python bench/profile_router.py spy /tmp/prof/router.txt [--top 25] [--match api/ taskexec/]
      Summarises py-spy samples (``--format raw``) taken by ``bench/throughput.py --py-spy DIR`` under load:
      per function, the share of samples with it on the stack (inclusive) and at the top (self).

Needs PostgreSQL at TEL_TEST_DATABASE_URL and Redis at TEL_TEST_REDIS_URL; only this run's Redis keys
are deleted at the end. py-spy comes with the dev dependencies.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import support  # noqa: E402

COUNTED = 20  # tasks run again under a call counter
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


# --------------------------------------------------------------------------- in-process

def inproc(args: argparse.Namespace) -> int:
    from sqlalchemy import event, text

    from api import create_app
    from taskexec.core.config import Settings
    from taskexec.services.outbox import deliver_due
    from taskexec.store.auth import create_api_key, issue_token
    from taskexec.store.db import Database
    from taskexec.store.migrate import upgrade

    prefix = "prof" + uuid.uuid4().hex[:8]
    dbname = f"bench_{prefix}"
    with support.admin_conn() as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    receiver = support.Receiver()  # the orchestrator: every change is delivered, as in production
    try:
        upgrade(support.db_url(dbname))
        # clients counted, never refused (as throughput.py)
        env = support.base_env(dbname, prefix, LOG_LEVEL="WARNING", WORKFLOW_ORCHESTRATOR_URL=receiver.url,
                               TEL_API_RATE_LIMIT_EXEMPT_ROLES="admin,service,submitter",
                               **dict(item.split("=", 1) for item in args.env))
        settings = Settings(**{k: v for k, v in env.items()  # type: ignore[arg-type]
                               if k.startswith(("TEL_", "DATABASE_URL", "CELERY_", "LOG_", "WORKFLOW_"))})
        db = Database(settings.database_url)
        with db.session() as s:
            _, client_key = create_api_key(s, "bench-client", ["submitter"])
            _, service_key = create_api_key(s, "bench-workers", ["service"])
        admin = {"Authorization": "Bearer " + issue_token(settings, "bench", ["admin"])}
        client_auth = {"X-API-Key": client_key} if args.auth == "apikey" else admin
        service = {"X-API-Key": service_key}
        app = create_app(settings, start_dispatcher=False)
        rt = app.extensions["taskexec"]
        rt.deliverer.threads = 1  # every POST in this thread, so that it is measured and counted
        http = app.test_client()
        r = http.post("/api/v1/tasks/definitions", headers=admin, json={
            "id": "noop", "name": "noop", "type": "INTEGRATION",
            "executionConfig": {"request": {"method": "GET", "url": "http://127.0.0.1:9/noop"}}})
        assert r.status_code == 201, r.text

        statements = [0]
        engine = rt.db.engine
        event.listen(engine, "before_cursor_execute", lambda *_a, **_k: statements.__setitem__(0, statements[0] + 1))
        cpu: dict[str, float] = defaultdict(float)
        sql: Counter[str] = Counter()
        calls: Counter[str] = Counter()  # Python + C function calls: a noise-free proxy for CPU work
        counting = [False]
        trace = tempfile.TemporaryFile()  # noqa: SIM115 - libpq protocol trace of the router connections
        event.listen(engine, "connect", lambda dbapi_conn, _rec: dbapi_conn.pgconn.trace(trace.fileno()))
        engine.dispose()  # reconnect with tracing on

        def measured(kind: str, fn: Any) -> Any:
            """Run fn() once, adding its CPU (this thread), statements and, when counting, calls and round trips."""
            if counting[0]:
                n = [0]

                def tracer(_frame: Any, event: str, _arg: Any) -> None:
                    if event in ("call", "c_call"):
                        n[0] += 1

                os.write(trace.fileno(), f"\nMARK {kind}\n".encode())
                sys.setprofile(tracer)
                out = fn()
                sys.setprofile(None)
                os.write(trace.fileno(), b"\nMARK -\n")
                calls[kind] += n[0]
                return out
            s0, c0 = statements[0], time.thread_time()
            out = fn()
            cpu[kind] += time.thread_time() - c0
            sql[kind] += statements[0] - s0
            return out

        def post(path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
            resp = http.post(path, headers=headers, json=body)
            assert resp.status_code in (200, 201), (path, resp.text)
            return resp.get_json()

        def reports(items: list[dict[str, Any]]) -> list[Any]:
            """Reports through /internal/v1/reports, `--coalesce` per call as a pool sends them under load (its
            threads' reports share one call; at rest each goes alone)."""
            out = post("/internal/v1/reports", service, {"items": items})["results"]
            assert all(r["status"] == 200 for r in out), out
            return [r["result"] for r in out]

        k = args.coalesce

        def one() -> None:
            """`k` tasks: submitted one by one, started and finished with k reports per call, one outbox pass."""
            ids = [measured("submit", lambda: post("/api/v1/tasks", client_auth,
                                                    {"taskDefinitionId": "noop", "input": {}}))["id"]
                   for _ in range(k)]
            with db.engine.connect() as conn:  # what the broker messages carry
                tokens = [conn.execute(text("SELECT dispatch_token FROM task_instances WHERE id = :i"),
                                       {"i": task_id}).scalar_one() for task_id in ids]
            jobs = measured("start", lambda: reports([
                {"kind": "start", "taskId": t, "dispatchToken": tok, "workerId": "bench:1"}
                for t, tok in zip(ids, tokens, strict=True)]))
            measured("finish", lambda: reports([
                {"kind": "finish", "taskId": t, "attempt": job["job"]["attempt"], "status": "COMPLETED", "output": {},
                 "executionMetadata": {"httpStatus": 200, "responseTimeMs": 1}}
                for t, job in zip(ids, jobs, strict=True)]))
            assert measured("outbox", lambda: deliver_due(rt.db, settings, rt.deliverer)) == 3 * k

        for _ in range(max(20 // k, 6)):  # warm-up: imports, statement caches, prepared statements
            one()
        cpu.clear()
        sql.clear()
        profiler: Any = None
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005)
            profiler.start()
        elif args.cprofile:
            import cProfile

            profiler = cProfile.Profile(time.thread_time)  # CPU time, not waits for the database
            profiler.enable()
        wall = time.perf_counter()
        rounds = max(1, args.n // k)
        args.n = rounds * k
        for _ in range(rounds):
            one()
        wall = time.perf_counter() - wall
        if args.pyinstrument:
            profiler.stop()
        elif args.cprofile:
            profiler.disable()
        counting[0] = True
        counted = max(1, COUNTED // k) * k
        for _ in range(counted // k):
            one()
        if args.batch:
            body = {"tasks": [{"taskDefinitionId": "noop", "input": {}} for _ in range(args.batch)]}
            for _ in range(2):  # warm-up, then measured
                counting[0] = False
                cpu["batch"] = 0.0
                sql["batch"] = 0
                measured("batch", lambda: post("/api/v1/tasks/batch", client_auth, body))
            counting[0] = True
            measured("batch", lambda: post("/api/v1/tasks/batch", client_auth, body))
        trips = round_trips(trace)
        trace.close()
        kinds = ("submit", "start", "finish", "outbox")
        print(f"{args.n} tasks in-process (submit auth: {args.auth}), {wall / args.n * 1000:.1f} ms wall per task; "
              f"start and finish reports through /internal/v1/reports, {k} per call; outbox: the pass delivering "
              f"the events of those {k} tasks to a local receiver; figures per task")
        print(f"{'request':<8} {'CPU ms':>7} {'SQL':>5} {'PG RT':>6} {'calls':>7}")
        for kind in kinds:
            print(f"{kind:<8} {cpu[kind] / args.n * 1000:7.2f} {sql[kind] / args.n:5.1f} "
                  f"{trips[kind] / counted:6.1f} {calls[kind] // counted:7d}")
        print(f"{'total':<8} {sum(cpu[x] for x in kinds) / args.n * 1000:7.2f} "
              f"{sum(sql[x] for x in kinds) / args.n:5.1f} {sum(trips[x] for x in kinds) / counted:6.1f} "
              f"{sum(calls[x] for x in kinds) // counted:7d}")
        if args.batch:
            b = args.batch
            print(f"{'batch':<8} {cpu['batch'] / b * 1000:7.2f} {sql['batch'] / b:5.2f} {trips['batch'] / b:6.2f} "
                  f"{calls['batch'] // b:7d}   (per task of one POST /tasks/batch of {b})")
        if args.pyinstrument:
            print(profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False))
        elif args.cprofile:
            import pstats

            stats = pstats.Stats(profiler).strip_dirs()
            stats.sort_stats("cumulative").print_stats(args.cprofile)
            stats.sort_stats("tottime").print_stats(args.cprofile)
        rt.deliverer.close()
        rt.db.dispose()
        db.dispose()
    finally:
        receiver.close()
        support.drop_database(dbname)
        red = redis.Redis.from_url(support.REDIS_URL)
        keys = list(red.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            red.delete(*keys)
        red.close()
    return 0


def round_trips(trace: Any) -> Counter[str]:
    """Client messages that wait for the server (Query, or Sync closing Parse/Bind/Execute) per marked kind."""
    trace.seek(0)
    out: Counter[str] = Counter()
    kind = "-"
    for line in trace.read().decode(errors="replace").splitlines():
        if line.startswith("MARK "):
            kind = line[5:]
        elif kind != "-" and "\tF\t" in line and ("\tQuery" in line or "\tSync" in line):
            out[kind] += 1
    return out


# --------------------------------------------------------------------------- py-spy summaries

def start_profilers(outdir: str | None, pids: dict[str, int]) -> list[support.Proc]:
    """With --py-spy DIR: sample each process tree (all threads) into DIR/<name>.txt (collapsed stacks).

    Extra py-spy options come from $PYSPY_ARGS (e.g. ``--gil``: only the thread holding the GIL, i.e. CPU).
    Summarise with `spy` below."""
    if not outdir:
        return []
    spy = str(Path(sys.executable).parent / "py-spy")
    os.makedirs(outdir, exist_ok=True)
    return [support.Proc([spy, "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--rate", "200",
                          "--nonblocking", *os.environ.get("PYSPY_ARGS", "").split(), "-o", f"{outdir}/{name}.txt"],
                         dict(os.environ), Path(outdir) / f"{name}.log")
            for name, pid in pids.items()]



def cpu_snapshot(groups: dict[str, int], dbname: str | None = None) -> dict[str, float]:
    """CPU seconds (user+system) of each named process tree, of this process (the clients) and, with
    `dbname`, of the PostgreSQL backends serving that database; read from /proc."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    backends = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / tick
            stats[int(entry)] = (int(fields[1]), cpu)
            if dbname:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if fh.read().startswith(f"postgres: postgres {dbname} ".encode()):
                        backends += cpu
        except (OSError, IndexError, ValueError):
            continue
    out = {}
    for name, pid in groups.items():
        tree, todo = set(), [pid]
        while todo:
            current = todo.pop()
            tree.add(current)
            todo += [child for child, (parent, _) in stats.items() if parent == current and child not in tree]
        out[name] = sum(stats[p][1] for p in tree if p in stats)
    if dbname:
        out["postgres"] = backends
    out["bench clients"] = stats.get(os.getpid(), (0, 0.0))[1]
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}



def parse(path: Path) -> tuple[Counter[str], Counter[str], int]:
    """(inclusive, self, total) sample counts per `function (file)` frame."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_name(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    return inclusive, own, total


def _name(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m.group('func')} ({file})"


def spy(args: argparse.Namespace) -> int:
    inclusive, own, total = parse(args.samples)
    if not total:
        print("no samples", file=sys.stderr)
        return 1

    def keep(frame: str) -> bool:
        return not args.match or any(m in frame for m in args.match)

    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"\n{title:>9} %  function (file)")
        for frame, n in [(f, n) for f, n in counter.most_common() if keep(f)][: args.top]:
            print(f"{100 * n / total:11.1f}  {frame}")
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "spy":
        p = argparse.ArgumentParser(prog="profile_router.py spy")
        p.add_argument("samples", type=Path)
        p.add_argument("--top", type=int, default=25)
        p.add_argument("--match", nargs="*", default=None, help="keep frames whose file contains one of these")
        return spy(p.parse_args(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="tasks (each: submit, start, finish)")
    parser.add_argument("--auth", choices=("apikey", "jwt"), default="apikey", help="credential of the submitter")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra setting, e.g. TEL_API_KEY_CACHE_SECONDS=5 (repeatable)")
    parser.add_argument("--coalesce", type=int, default=1, metavar="K",
                        help="reports per /internal/v1/reports call (a pool's threads' reports travel together)")
    parser.add_argument("--batch", type=int, default=0, metavar="N",
                        help="also measure one POST /tasks/batch of N tasks (per task)")
    parser.add_argument("--pyinstrument", action="store_true", help="print pyinstrument's call tree (wall time)")
    parser.add_argument("--cprofile", type=int, metavar="LINES", default=0,
                        help="print cProfile's top LINES functions by cumulative and own CPU time")
    return inproc(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
