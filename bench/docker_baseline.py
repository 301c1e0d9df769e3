"""The Docker baselines of the sandbox and end-to-end benchmarks: the same harness, code and hardening as
taskexec's sandbox, without taskexec.

* `docker_run`: ``docker run --rm -i`` (the CLI) of the sandbox image with the same hardening flags as
  `sandbox.containers.create` (no network, read-only root, non-root user, all capabilities dropped,
  no-new-privileges, pids/memory (swap off)/CPU limits, tmpfs /tmp, /task and /task/output, ulimits,
  private IPC, /dev/shm capped), running the same harness (`sandbox/harness.py`) with the job on stdin.
  The container is removed by ``--rm``: on the clock, as `docker run` does it.
* `SdkRunner`: the Docker SDK (docker-py's low-level API, as the runner uses it): create the container
  with `sandbox.containers.create` itself (so the flags are the same by construction), attach, start,
  send the job, read the harness's answer. `remove_on_clock` chooses whether the removal is timed (and
  waited for) or happens afterwards in a background thread, as DockerRunner does after a result.
"""

from __future__ import annotations

import json
import queue
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox import containers as c  # noqa: E402
from sandbox.reaper import remove  # noqa: E402
from sandbox.spec import Limits  # noqa: E402
from sandbox.stream import AttachReader  # noqa: E402

LABELS = {"taskexec.bench": "1"}


def job_line(code: str, input_: Any, limits: Limits) -> tuple[str, bytes]:
    """(nonce, the harness's job line) for the python runtime."""
    nonce = secrets.token_hex(16)
    job = {"nonce": nonce, "runtime": "python", "code": code, "input": input_, "env": {},
           "output_bytes": limits.output_bytes, "memory_bytes": limits.memory_bytes}
    return nonce, json.dumps(job).encode() + b"\n"


def docker_run_args(image: str, limits: Limits) -> list[str]:
    """``docker run`` flags equal to `sandbox.containers.create`'s host config (network off)."""
    def tmpfs(path: str, size: int) -> str:
        return f"{path}:rw,nosuid,nodev,size={max(int(size), 4096)},mode=1777"

    env = [arg for k, v in c.BASE_ENV.items() for arg in ("-e", f"{k}={v}")]
    return ["docker", "run", "--rm", "-i", "--network", "none", "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--pids-limit", str(limits.pids),
            "--memory", str(limits.memory_bytes), "--memory-swap", str(limits.memory_bytes),
            "--cpus", str(limits.cpu), "--tmpfs", tmpfs("/tmp", limits.tmp_bytes),
            "--tmpfs", tmpfs("/task", limits.tmp_bytes), "--tmpfs", tmpfs("/task/output", limits.output_bytes + 65536),
            "--ulimit", "nofile=256:256", "--ulimit", "core=0:0", "--ipc", "private",
            "--shm-size", str(max(int(limits.tmp_bytes), 4096)), "--user", c.SANDBOX_USER, "-w", "/task",
            *env, *[arg for k, v in LABELS.items() for arg in ("--label", f"{k}={v}")], image, *c.COMMAND]


def parse_record(stderr: bytes, nonce: str) -> dict[str, Any]:
    """The harness's record (``{"exit", "output", ...}``) from its stderr."""
    marker = b"\x00TXEND:" + nonce.encode() + b":"
    tail = stderr.split(marker, 1)[1]
    return dict(json.loads(tail.split(b"\n", 1)[0]))


def docker_run(image: str, code: str, input_: Any, limits: Limits | None = None) -> Any:
    """Run `code` with the CLI; its output (asserts a clean exit)."""
    limits = limits or Limits()
    nonce, line = job_line(code, input_, limits)
    proc = subprocess.run(docker_run_args(image, limits), input=line, capture_output=True, timeout=120, check=True)
    record = parse_record(proc.stderr, nonce)
    assert record.get("exit") == 0, record
    return record["output"]


class SdkRunner:
    """Hardened single-use containers through the Docker SDK, without a pool or any taskexec machinery."""

    def __init__(self, api: Any, image: str, remove_on_clock: bool, limits: Limits | None = None) -> None:
        self.api = api
        self.image = image
        self.remove_on_clock = remove_on_clock
        self.limits = limits or Limits()
        self.key = c.ContainerKey(image=image, runtime="python", limits_class=self.limits.container_class(),
                                  network=False, worker_id="bench")
        self._removals: queue.Queue[str] = queue.Queue()
        self._remover: threading.Thread | None = None

    def run(self, code: str, input_: Any) -> Any:
        """Create, attach, start, send the job, read the answer; remove (now or in the background)."""
        nonce, line = job_line(code, input_, self.limits)
        cid = c.create(self.api, self.key, dict(LABELS))
        try:
            sock = c.attach(self.api, cid)
            raw = c.raw_socket(sock)
            self.api.start(cid)
            reader = AttachReader(raw, nonce, self.limits.output_bytes, 4096)
            reader.send(line)
            deadline = time.monotonic() + 120
            while not reader.done and time.monotonic() < deadline:
                reader.pump(0.1)
            record = reader.record or {}
            assert record.get("exit") == 0, (record, reader.tails())
            raw.close()
            sock.close()
        except BaseException:
            remove(self.api, cid)
            raise
        if self.remove_on_clock:
            remove(self.api, cid)
        else:
            self._remove_later(cid)
        return record["output"]

    def _remove_later(self, cid: str) -> None:
        if self._remover is None:
            self._remover = threading.Thread(target=self._remove_loop, daemon=True)
            self._remover.start()
        self._removals.put(cid)

    def _remove_loop(self) -> None:
        while True:
            cid = self._removals.get()
            try:
                remove(self.api, cid)
            finally:
                self._removals.task_done()

    def drain(self) -> None:
        """Wait for the background removals."""
        self._removals.join()
