"""Reading a container's CPU time, peak memory and OOM events.

``State.OOMKilled`` is unreliable (moby/moby#38352), so the runner reads the cgroup itself
while the container is still alive: first from the host's ``/sys/fs/cgroup`` (v1 with the
cgroupfs or systemd driver, or v2), falling back to the engine's one-shot stats API when
the worker cannot see the host cgroup tree (e.g. it runs in a container itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

CGROUP_ROOT = "/sys/fs/cgroup"  # a worker that cannot see it falls back to the stats API


@dataclass
class Usage:
    """Resource usage of a container's cgroup (None = unknown)."""

    cpu_ns: int | None = None
    peak_memory: int | None = None
    failcnt: int | None = None
    oom_kills: int | None = None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_keyed(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    out[parts[0]] = int(parts[1])
    except OSError:
        pass
    return out


def _v1_dirs(controller: str, cid: str) -> list[str]:
    base = os.path.join(CGROUP_ROOT, controller)
    return [os.path.join(base, "docker", cid),
            os.path.join(base, "system.slice", f"docker-{cid}.scope")]


def read_host(cid: str) -> Usage | None:
    """Read usage from the host cgroup tree; None when it is not visible here."""
    for mem_dir in _v1_dirs("memory", cid):
        if os.path.isdir(mem_dir):
            usage = Usage(peak_memory=_read_int(os.path.join(mem_dir, "memory.max_usage_in_bytes")),
                          failcnt=_read_int(os.path.join(mem_dir, "memory.failcnt")))
            oom = _read_keyed(os.path.join(mem_dir, "memory.oom_control"))
            usage.oom_kills = oom.get("oom_kill")
            for cpu_dir in _v1_dirs("cpuacct", cid) + _v1_dirs("cpu,cpuacct", cid):
                value = _read_int(os.path.join(cpu_dir, "cpuacct.usage"))
                if value is not None:
                    usage.cpu_ns = value
                    break
            return usage
    for v2_dir in (os.path.join(CGROUP_ROOT, "system.slice", f"docker-{cid}.scope"),
                   os.path.join(CGROUP_ROOT, "docker", cid)):
        if os.path.isfile(os.path.join(v2_dir, "memory.events")):
            events = _read_keyed(os.path.join(v2_dir, "memory.events"))
            cpu = _read_keyed(os.path.join(v2_dir, "cpu.stat"))
            return Usage(cpu_ns=cpu["usage_usec"] * 1000 if "usage_usec" in cpu else None,
                         peak_memory=_read_int(os.path.join(v2_dir, "memory.peak")),
                         failcnt=events.get("max"), oom_kills=events.get("oom_kill"))
    return None


def from_stats(stats: dict[str, Any]) -> Usage:
    """Convert an engine stats document (v1 or v2 host) to Usage."""
    mem = stats.get("memory_stats") or {}
    cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    return Usage(cpu_ns=cpu or None, peak_memory=mem.get("max_usage") or None,
                 failcnt=mem.get("failcnt"), oom_kills=None)


def read_usage(api: Any, cid: str) -> Usage:
    """Usage of a running container: host cgroup files, else the stats API."""
    usage = read_host(cid)
    if usage is not None:
        return usage
    try:
        return from_stats(api.stats(cid, stream=False, one_shot=True))
    except Exception:  # noqa: BLE001 - stats are best effort
        return Usage()
