"""Creating hardened sandbox containers, and the labels/names that identify them.

Every container is created with the same hardening (no network unless allowed, read-only
root, non-root user, no capabilities, no-new-privileges, default seccomp, pids/memory/CPU
limits, tmpfs for /tmp, /task and /task/output, no host mounts) and runs the harness as
PID 1, blocked on stdin until it gets its job.

Labels cannot change after creation, so a *pooled* container is created with an empty task
id and, when used, renamed to ``tx.<deadline>.<attempt>.<rand>.<task-slug>``; the reaper and
``kill_task`` read both labels and names.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sandbox.spec import Limits

LABEL_MANAGED = "taskexec.managed"
LABEL_TASK = "taskexec.task_id"
LABEL_ATTEMPT = "taskexec.attempt"
LABEL_WORKER = "taskexec.worker_id"
LABEL_DEADLINE = "taskexec.deadline"
LABEL_POOL = "taskexec.pool"
LABEL_RUNTIME = "taskexec.runtime"
LABEL_DEPLOYMENT = "taskexec.deployment"  # set by DockerRunner(deployment=...): scopes the reaper

SANDBOX_USER = "10001:10001"
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
_HARNESS_PATH = os.path.join(os.path.dirname(__file__), "harness.py")
with open(_HARNESS_PATH, encoding="utf-8") as _f:
    HARNESS_SOURCE = _f.read()
COMMAND = ["python3", "-I", "-S", "-c", HARNESS_SOURCE]
_SLUG_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ContainerKey:
    """Everything fixed at container creation: containers with equal keys are interchangeable."""

    image: str
    runtime: str
    limits_class: tuple[float, int, int, int, int]
    network: bool
    worker_id: str
    container_runtime: str | None = None
    network_name: str | None = None  # with `network`: the egress network (sandbox/egress.py); None: Docker's bridge

    @property
    def limits(self) -> Limits:
        cpu, mem, pids, out, tmp = self.limits_class
        return Limits(cpu=cpu, memory_bytes=mem, pids=pids, output_bytes=out, tmp_bytes=tmp)


def task_slug(task_id: str) -> str:
    """A container-name-safe, stable token for a task id."""
    if _SLUG_OK.match(task_id):
        return task_id
    return "h" + hashlib.sha1(task_id.encode()).hexdigest()[:20]


def used_name(task_id: str, attempt: int, deadline: float) -> str:
    """Name of a pooled container once it runs a task."""
    return f"tx.{int(deadline)}.{attempt}.{secrets.token_hex(3)}.{task_slug(task_id)}"


def parse_name(name: str) -> dict[str, Any] | None:
    """Inverse of :func:`used_name` (None for other names)."""
    parts = name.lstrip("/").split(".", 4)
    if len(parts) != 5 or parts[0] != "tx" or not parts[1].isdigit():
        return None
    try:
        return {"deadline": float(parts[1]), "attempt": int(parts[2]), "slug": parts[4]}
    except ValueError:
        return None


def labels_for(key: ContainerKey, task_id: str, attempt: int, deadline: float, pooled: bool,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    """Labels every sandbox container carries (ours override ``extra``)."""
    labels = dict(extra or {})
    labels.update({
        LABEL_MANAGED: "1", LABEL_TASK: task_id, LABEL_ATTEMPT: str(attempt),
        LABEL_WORKER: key.worker_id, LABEL_DEADLINE: str(int(deadline)),
        LABEL_POOL: "1" if pooled else "0", LABEL_RUNTIME: key.runtime,
    })
    return labels


def _tmpfs(size: int) -> str:
    return f"rw,nosuid,nodev,size={max(int(size), 4096)},mode=1777"


def create(api: Any, key: ContainerKey, labels: dict[str, str], name: str | None = None) -> str:
    """Create (not start) a hardened container for ``key``; return its id."""
    lim = key.limits
    host_config = api.create_host_config(
        network_mode=(key.network_name or "bridge") if key.network else "none",
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=lim.pids,
        mem_limit=lim.memory_bytes,
        memswap_limit=lim.memory_bytes,
        nano_cpus=int(lim.cpu * 1e9),
        tmpfs={
            "/tmp": _tmpfs(lim.tmp_bytes),
            "/task": _tmpfs(lim.tmp_bytes),
            "/task/output": _tmpfs(lim.output_bytes + 64 * 1024),
        },
        ulimits=[{"Name": "nofile", "Soft": 256, "Hard": 256},
                 {"Name": "core", "Soft": 0, "Hard": 0}],
        runtime=key.container_runtime,
        ipc_mode="private",
        shm_size=max(int(lim.tmp_bytes), 4096),  # /dev/shm is writable too: the same cap as /tmp, not Docker's 64M
    )
    created = api.create_container(
        key.image, command=COMMAND, user=SANDBOX_USER, stdin_open=True, tty=False,
        environment=dict(BASE_ENV), labels=labels, name=name, host_config=host_config,
        working_dir="/task", network_disabled=not key.network,
    )
    return created["Id"]


def attach(api: Any, cid: str) -> Any:
    """Open the multiplexed stdin/stdout/stderr socket of a container."""
    return api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})


def raw_socket(sock: Any) -> Any:
    """The underlying ``socket.socket`` of a docker-py attach socket."""
    return getattr(sock, "_sock", sock)
