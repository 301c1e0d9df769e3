"""Latency of a hello-world task: DockerRunner (pooled and cold) vs plain ``docker run --rm``.

Usage: python bench/sandbox_latency.py [-n 30] [--pool 2]
Prints p50/p95 (ms) of each, the ratio runner/naive, and throughput at concurrency 2.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox import DockerRunner, RunSpec, build_images  # noqa: E402

HELLO = "def main(inp):\n    return {'hello': inp['name']}\n"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def spec() -> RunSpec:
    return RunSpec(task_id=f"bench-{uuid.uuid4().hex[:8]}", attempt=1, runtime="python", code=HELLO,
                   input={"name": "world"}, worker_id="bench")


def time_runner(runner: DockerRunner, n: int, settle: float) -> list[float]:
    out = []
    for _ in range(n):
        if settle:
            time.sleep(settle)  # let the pool refill, as between dequeues of a real worker
        t = time.perf_counter()
        res = runner.run(spec())
        out.append((time.perf_counter() - t) * 1000)
        assert res.ok and res.output == {"hello": "world"}, res
    return out


def naive_once(image: str) -> float:
    t = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", "--network", "none", image, "python3", "-c",
                    "import json; print(json.dumps({'hello': 'world'}))"], check=True, capture_output=True)
    return (time.perf_counter() - t) * 1000


def throughput(fn, n: int, concurrency: int = 2) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(lambda _: fn(), range(n)))
    return n / (time.perf_counter() - t)


def line(name: str, values: list[float]) -> str:
    p50, p95 = statistics.median(values), pct(values, 95)
    return f"{name:<22} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   (n={len(values)})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=30)
    parser.add_argument("--pool", type=int, default=2, help="pool size per key for the pooled runner")
    parser.add_argument("--settle", type=float, default=0.3, help="pause between pooled runs (s)")
    args = parser.parse_args()
    images = build_images(log=lambda _m: None)
    image = images["python"]

    naive_once(image)  # warm caches
    naive = [naive_once(image) for _ in range(args.n)]
    cold_runner = DockerRunner(images, pool_size=0)
    cold = time_runner(cold_runner, args.n, 0)
    pooled_runner = DockerRunner(images, pool_size=args.pool)
    pooled_runner.run(spec())  # registers the pool key
    pooled = time_runner(pooled_runner, args.n, args.settle)

    print(line("docker run --rm", naive))
    print(line("DockerRunner cold", cold))
    print(line(f"DockerRunner pool={args.pool}", pooled))
    base = statistics.median(naive)
    print(f"ratio p50 cold/naive   {statistics.median(cold) / base:.2f}")
    print(f"ratio p50 pooled/naive {statistics.median(pooled) / base:.2f}")

    def run_ok(r: DockerRunner) -> None:
        assert r.run(spec()).ok

    print(f"throughput c=2 naive   {throughput(lambda: naive_once(image), args.n):6.1f} tasks/s")
    print(f"throughput c=2 cold    {throughput(lambda: run_ok(cold_runner), args.n):6.1f} tasks/s")
    print(f"throughput c=2 pooled  {throughput(lambda: run_ok(pooled_runner), args.n):6.1f} tasks/s")
    pooled_runner.close()
    cold_runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
