"""Latency and throughput of a hello-world run: taskexec's DockerRunner vs the same harness, code and
hardening without it.

Usage: python bench/sandbox_latency.py [-n 30] [-m 20] [--rounds 3] [--pool 2]

Paths (see `bench/docker_baseline.py`):

* ``docker run --rm``: the CLI with the sandbox's hardening flags and harness; the removal is on the
  clock (``--rm`` waits for it), as the CLI does it.
* ``Docker SDK``: create (`sandbox.containers.create`, so the same flags), attach, start, send the job,
  read the answer; the container is removed afterwards in a background thread, off the clock.
* ``DockerRunner cold``: taskexec's runner without its pool; it removes after the result, off the clock.
* ``DockerRunner pool=P``: with P pre-started single-use containers.

Latency: n runs of each path, interleaved (one of each per turn, the order rotating) so that load from
elsewhere falls on all alike; pending background removals are finished before each timed run. Printed
p50 / p95 / min-max per path and the ratios to both baselines. Throughput: m runs at concurrency 2 per
path, --rounds interleaved rounds, background removals included in the time (waited for at the end),
median [min-max].
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, pct, spread  # noqa: E402
from bench.docker_baseline import SdkRunner, docker_run  # noqa: E402
from sandbox import DockerRunner, RunSpec, build_images  # noqa: E402

HELLO = "def main(input):\n    return {'greeting': 'Hello, ' + input['name']}\n"
INPUT = {"name": "world"}
EXPECTED = {"greeting": "Hello, world"}


def spec() -> RunSpec:
    return RunSpec(task_id=f"bench-{uuid.uuid4().hex[:8]}", attempt=1, runtime="python", code=HELLO,
                   input=INPUT, worker_id="bench")


class Path_:
    """One way of running the hello-world: `run()` once; `settle()` finishes its background removals."""

    def __init__(self, name: str, run: Callable[[], object], settle: Callable[[], object] = lambda: None) -> None:
        self.name, self._run, self.settle = name, run, settle
        self.lat: list[float] = []
        self.tput: list[float] = []

    def once(self) -> float:
        t = time.perf_counter()
        out = self._run()
        ms = (time.perf_counter() - t) * 1000
        assert out == EXPECTED, out
        return ms


def throughput(path: Path_, m: int, concurrency: int = 2) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(lambda _: path.once(), range(m)))
    path.settle()
    return m / (time.perf_counter() - t)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="latency runs per path")
    parser.add_argument("-m", type=int, default=20, help="runs per throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    parser.add_argument("--pool", type=int, default=2, help="pool size per key for the pooled runner")
    args = parser.parse_args()
    print(machine(), flush=True)
    images = build_images(log=lambda _m: None)
    image = images["python"]
    cold_runner = DockerRunner(images, pool_size=0)
    pooled_runner = DockerRunner(images, pool_size=args.pool)
    sdk = SdkRunner(cold_runner.api, image, remove_on_clock=False)

    def runner_path(r: DockerRunner) -> Callable[[], object]:
        def run() -> object:
            res = r.run(spec())
            assert res.ok, res
            return res.output
        return run

    paths = [
        Path_("docker run --rm", lambda: docker_run(image, HELLO, INPUT)),
        Path_("Docker SDK", lambda: sdk.run(HELLO, INPUT), sdk.drain),
        Path_("DockerRunner cold", runner_path(cold_runner), cold_runner.drain),
        Path_(f"DockerRunner pool={args.pool}", runner_path(pooled_runner), pooled_runner.drain),
    ]
    try:
        for p in paths:  # warm-up: caches, the pool's key
            p.once()
            p.settle()
        for i in range(args.n):
            for p in paths[i % len(paths):] + paths[: i % len(paths)]:
                p.settle()
                p.lat.append(p.once())
        for i in range(args.rounds):
            for p in paths[i % len(paths):] + paths[: i % len(paths)]:
                p.tput.append(throughput(p, args.m))
    finally:
        pooled_runner.close()
        cold_runner.close()
        sdk.drain()
    print(f"\nhello-world python, n={args.n} interleaved runs per path; throughput: {args.m} runs at concurrency 2, "
          f"{args.rounds} interleaved rounds, median [min-max]; removal off the clock for the SDK and the runner "
          "in latency, waited for in throughput; `docker run --rm` removes on the clock")
    print(f"{'path':<24} {'p50 ms':>8} {'p95 ms':>8} {'min-max ms':>16} {'tasks/s (c=2)':>22}")
    for p in paths:
        print(f"{p.name:<24} {statistics.median(p.lat):8.1f} {pct(p.lat, 95):8.1f} "
              f"{min(p.lat):7.1f}-{max(p.lat):<8.1f} {spread(p.tput):>22}")
    cli, sdk_p = statistics.median(paths[0].lat), statistics.median(paths[1].lat)
    for p in paths[2:]:
        print(f"ratio p50 {p.name + ' / docker run':<36} {statistics.median(p.lat) / cli:5.2f}   "
              f"/ Docker SDK {statistics.median(p.lat) / sdk_p:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
