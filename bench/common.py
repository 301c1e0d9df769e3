"""What the benchmarks share: percentiles and spreads, CPU per process from /proc, helper processes.

Figures of repeated runs are printed as ``median [min-max]``; CPU time is read from /proc (user +
system, every thread) for each process of a named process tree, for the PostgreSQL backends serving
one database, and for the benchmark process itself (its client threads).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import support  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def spread(values: Sequence[float], fmt: str = "{:.1f}") -> str:
    """``median [min-max]`` of repeated runs (just the value for one run)."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# --------------------------------------------------------------------------- CPU from /proc

@dataclass
class CpuSample:
    """CPU seconds per process (``group/name[pid]``), summed per group by `groups()`."""

    per_process: dict[str, float] = field(default_factory=dict)

    def minus(self, before: CpuSample) -> CpuSample:
        return CpuSample({k: v - before.per_process.get(k, 0.0) for k, v in self.per_process.items()})

    def groups(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value in self.per_process.items():
            group = key.split("/", 1)[0]
            out[group] = out.get(group, 0.0) + value
        return out


def _proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds, short command) for every process we may read."""
    table = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                head, _, rest = fh.read().rpartition(")")
            fields = rest.split()
            comm = head.split("(", 1)[1]
            table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, comm)
        except (OSError, IndexError, ValueError):
            continue
    return table


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def cpu_sample(groups: dict[str, int], dbname: str | None = None, own: str = "bench clients") -> CpuSample:
    """CPU seconds of every process in each named tree, of the PostgreSQL backends of `dbname`, and
    of this process (named `own`)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    out: dict[str, float] = {}
    for name, root in groups.items():
        todo = [root]
        while todo:
            pid = todo.pop()
            if pid in table:
                label = "main" if pid == root else table[pid][2]
                out[f"{name}/{label}[{pid}]"] = table[pid][1]
            todo += children.get(pid, [])
    if dbname:
        prefix = f"postgres: postgres {dbname} ".encode()
        for pid, (_, cpu, comm) in table.items():
            if comm == "postgres" and _cmdline(pid).startswith(prefix):
                out[f"postgres/backend[{pid}]"] = cpu
    out[f"{own}/main[{os.getpid()}]"] = table.get(os.getpid(), (0, 0.0, ""))[1]
    return CpuSample(out)


def cpu_lines(samples: list[CpuSample], n: int, counted: Sequence[str], indent: str = "  ") -> list[str]:
    """Per group and per process: CPU ms per task as median [min-max] over runs; total of `counted` groups."""
    lines = []
    groups = list(dict.fromkeys(g for s in samples for g in s.groups()))
    for group in groups:
        values = [s.groups().get(group, 0.0) * 1000 / n for s in samples]
        procs = sorted({k for s in samples for k in s.per_process if k.startswith(group + "/")})
        detail = ""
        if len(procs) > 1:
            parts = []
            for proc in procs:
                vals = [s.per_process.get(proc, 0.0) * 1000 / n for s in samples]
                if median(vals) >= 0.05:
                    parts.append(f"{proc.split('/', 1)[1]} {median(vals):.1f}")
            detail = "  (" + ", ".join(parts) + ")" if parts else ""
        mark = "" if group in counted else "  [not counted]"
        lines.append(f"{indent}{group:<16} {spread(values):>22}{mark}{detail}")
    totals = [sum(v for g, v in s.groups().items() if g in counted) * 1000 / n for s in samples]
    lines.append(f"{indent}{'total counted':<16} {spread(totals):>22}  ({' + '.join(counted)})")
    return lines


def counted_total(sample: CpuSample, n: int, counted: Sequence[str]) -> float:
    return sum(v for g, v in sample.groups().items() if g in counted) * 1000 / n


# --------------------------------------------------------------------------- helper processes

def start_helper(args: list[str], log: Path, what: str) -> tuple[support.Proc, str]:
    """Start a helper process that prints ``... listening on URL``; return it and its URL."""
    proc = support.Proc(args, {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}, log)
    support.wait_for(lambda: "listening on" in proc.text() or proc.popen.poll() is not None, 30, 0.05,
                     what=f"{what} ready")
    assert proc.popen.poll() is None, proc.text()
    return proc, proc.text().split("listening on ", 1)[1].split()[0]


class ReceiverClient:
    """Reads the counts of a `bench/receiver.py` process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.trust_env = False

    def stats(self) -> dict[str, Any]:
        resp = self.http.get(self.url + "/stats", timeout=10)
        resp.raise_for_status()
        return dict(resp.json())

    def wait_terminal(self, count: int, timeout: float, poll: float = 5.0) -> float:
        """Wait until `count` tasks have a terminal event (long polls of at most `poll` seconds, answered
        as soon as the count is reached); return time.perf_counter() when seen."""
        deadline = time.monotonic() + timeout
        while True:
            wait = max(0.0, min(poll, deadline - time.monotonic()))
            resp = self.http.get(self.url + "/stats", params={"terminal": count, "wait": wait}, timeout=wait + 10)
            resp.raise_for_status()
            got = resp.json()["terminal"]
            if got >= count:
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise AssertionError(f"only {got}/{count} terminal events after {timeout}s")


def delete_keys(prefix: str) -> int:
    """Remove this run's Redis keys (queues, bindings, breaker state) by their unique prefix."""
    r = redis.Redis.from_url(support.REDIS_URL)
    keys = list(r.scan_iter(match=f"*{prefix}*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()
    return len(keys)


def machine() -> str:
    """One line naming the machine the figures came from."""
    import platform

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()
    return (f"machine: {platform.node()}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}; load average at start "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
