"""DockerRunner: run one attempt of user code in a throwaway container.

Flow of :meth:`DockerRunner.run`: take a pre-started container from the pool (or create,
attach and start one), send the job line on stdin, read the attach stream until the
harness end markers while checking the host-side deadline, the cancel event and the output
cap, read the cgroup (CPU time, peak memory, OOM kills) while the container is still alive,
classify, and ALWAYS remove the container.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import queue
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
import requests.exceptions

from sandbox import cgroups
from sandbox import containers as c
from sandbox import reaper as reaper_mod
from sandbox.classify import Outcome, classify
from sandbox.egress import Egress
from sandbox.errors import SandboxUnavailable
from sandbox.images import DEFAULT_IMAGES
from sandbox.pool import ContainerPool, Handle
from sandbox.spec import RUNTIMES, RunResult, RunSpec

log = logging.getLogger(__name__)
_ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)
_POLL_S = 0.1
_REMOVE_RETRY_S = 5.0  # failed removals (engine unreachable) are tried again this often ...
_REMOVE_TRIES = 120  # ... this many times (10 min); then the reaper's deadline rule is left
# A finished attempt's container is removed this long after `run` returns: its removal (and the pool's refill)
# keeps dockerd busy on both cores of a small machine for a while, and done at once it delays what the caller
# does with the result (the worker's report, the router's event). Its processes are already dead by then.
REMOVE_DELAY_S = 0.25


class DockerRunner:
    """Runs :class:`RunSpec` attempts in hardened, single-use Docker containers."""

    def __init__(self, images: dict[str, str] | None = None, docker_client: Any = None,
                 log_tail_bytes: int = 64 * 1024, container_runtime: str | None = None,
                 allow_network: bool = False, pool_size: int | None = None,
                 pool_idle_ttl_s: float = 600.0, reap_grace_s: float = 30.0,
                 async_remove: bool = True, deployment: str | None = None, egress: Egress | None = None,
                 remove_delay_s: float = REMOVE_DELAY_S) -> None:
        self.images = dict(DEFAULT_IMAGES)
        # Every container carries this label and the reaper only looks at containers carrying it, so
        # deployments sharing one engine never reap (and report lost) each other's containers.
        self.scope = {c.LABEL_DEPLOYMENT: deployment} if deployment else {}
        self.images.update(images or {})
        self._client = docker_client
        self.log_tail_bytes = log_tail_bytes
        self.container_runtime = container_runtime
        self.allow_network = allow_network
        # Where containers with network go: the egress network with its rules (the worker always sets it);
        # without it Docker's default bridge, which reaches the host and private ranges (library use only).
        self.egress = egress
        self.reap_grace_s = reap_grace_s
        if pool_size is None:
            pool_size = 0  # library default: no pool (the worker passes TEL_SANDBOX_POOL_SIZE)
        self.pool = ContainerPool(self._start_pooled, self._discard, size=pool_size,
                                  idle_ttl=pool_idle_ttl_s)
        self._killed: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self.async_remove = async_remove
        self.remove_delay_s = remove_delay_s
        self._removals: queue.Queue[tuple[Handle, float] | None] = queue.Queue()  # (handle, when to remove)
        self._remover: threading.Thread | None = None
        self._unremoved: dict[str, int] = {}  # container id -> failed removals (e.g. the engine restarting)
        atexit.register(self.close)

    # -- engine -----------------------------------------------------------------------------
    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=60)
            except docker.errors.DockerException as exc:
                raise SandboxUnavailable(f"Docker engine unreachable: {exc}") from exc
        return self._client

    @property
    def api(self) -> Any:
        return self.client.api

    def ping(self) -> bool:
        """True when the engine answers."""
        try:
            return bool(self.api.ping())
        except Exception:  # noqa: BLE001
            return False

    def close(self) -> None:
        """Remove idle pooled containers, stop the refill thread, finish pending removals."""
        self.pool.close()
        self.drain()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until background removals are done; True if none are pending."""
        end = time.monotonic() + timeout
        while self._removals.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.01)
        return not self._removals.unfinished_tasks

    def _ensure_remover(self) -> None:
        with self._lock:
            if self._remover is None or not self._remover.is_alive():
                self._remover = threading.Thread(target=self._remove_loop, name="sandbox-remover",
                                                 daemon=True)
                self._remover.start()

    def _remove_later(self, handle: Handle, delay: float = 0.0) -> None:
        self._ensure_remover()
        self._removals.put((handle, time.monotonic() + delay))

    def _remove_loop(self) -> None:
        while True:
            try:
                item = self._removals.get(timeout=_REMOVE_RETRY_S)
            except queue.Empty:
                self._retry_removals()
                continue
            try:
                if item is not None:
                    handle, due = item
                    time.sleep(max(0.0, due - time.monotonic()))
                    self._discard(handle)
            finally:
                self._removals.task_done()

    def _retry_removals(self) -> None:
        """Remove again what could not be removed, e.g. while the engine was restarting."""
        with self._lock:
            pending = list(self._unremoved)
        for cid in pending:
            self._remove(cid)

    # -- containers -------------------------------------------------------------------------
    def _key(self, spec: RunSpec) -> c.ContainerKey:
        if spec.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {spec.runtime!r} (expected one of {RUNTIMES})")
        network = bool(spec.network and self.allow_network)
        network_name = self.egress.network(self.client).name if network and self.egress is not None else None
        return c.ContainerKey(image=self.images[spec.runtime], runtime=spec.runtime,
                              limits_class=spec.limits.container_class(), network=network,
                              worker_id=spec.worker_id, container_runtime=self.container_runtime,
                              network_name=network_name)

    def _start(self, key: c.ContainerKey, labels: dict[str, str], pooled: bool) -> Handle:
        """Create, attach and start a container (removing it again if any step fails)."""
        try:
            cid = c.create(self.api, key, labels)
        except docker.errors.ImageNotFound as exc:
            raise SandboxUnavailable(
                f"sandbox image {key.image} missing: run `taskexec sandbox build-image`") from exc
        except _ENGINE_ERRORS as exc:
            raise SandboxUnavailable(f"cannot create sandbox container: {exc}") from exc
        try:
            sock = c.attach(self.api, cid)
            self.api.start(cid)
            return Handle(cid=cid, sock=sock, raw=c.raw_socket(sock), key=key, pooled=pooled)
        except BaseException as exc:
            self._remove(cid)
            if isinstance(exc, _ENGINE_ERRORS):
                raise SandboxUnavailable(f"cannot start sandbox container: {exc}") from exc
            raise

    def _start_pooled(self, key: c.ContainerKey) -> Handle:
        deadline = time.time() + self.pool.idle_ttl
        return self._start(key, c.labels_for(key, "", 0, deadline, pooled=True, extra=self.scope), pooled=True)

    def _remove(self, cid: str) -> None:
        try:
            reaper_mod.remove(self.api, cid)
        except Exception as exc:  # noqa: BLE001 - tried again in the background, the reaper is the last resort
            with self._lock:
                tries = self._unremoved[cid] = self._unremoved.get(cid, 0) + 1
                if tries >= _REMOVE_TRIES:
                    del self._unremoved[cid]
            if tries == 1 or tries >= _REMOVE_TRIES:
                log.warning("sandbox: cannot remove container %s (try %d): %s", cid[:12], tries, exc)
            self._ensure_remover()
        else:
            with self._lock:
                self._unremoved.pop(cid, None)

    def _discard(self, handle: Handle) -> None:
        # Close the attach connection first: an unread stream (e.g. after the output cap)
        # blocks the engine's copier and makes the removal hang.
        with contextlib.suppress(OSError):
            handle.raw.shutdown(socket.SHUT_RDWR)
        for sock in (handle.raw, handle.sock):
            with contextlib.suppress(Exception):
                sock.close()
        self._remove(handle.cid)

    def _acquire(self, spec: RunSpec, key: c.ContainerKey, deadline: float) -> Handle:
        handle = self.pool.take(key)
        while handle is not None and _stream_closed(handle.raw):  # killed while idle (e.g. engine restart)
            log.info("sandbox: pooled container %s is gone; discarding it", handle.cid[:12])
            self._remove_later(handle)
            handle = self.pool.take(key)
        if handle is not None:
            return handle  # renamed for its task by `_drive`, once the job is on its way
        labels = c.labels_for(key, spec.task_id, spec.attempt, deadline, pooled=False,
                              extra={**(spec.labels or {}), **self.scope})
        return self._start(key, labels, pooled=False)

    # -- run ----------------------------------------------------------------------------------
    def run(self, spec: RunSpec, cancel: threading.Event | None = None) -> RunResult:
        """Run one attempt; block until it ends, times out or ``cancel`` is set.

        Raises SandboxUnavailable when the engine or image is unavailable (retry later).
        """
        key = self._key(spec)
        nonce = secrets.token_hex(16)
        try:
            job = json.dumps({"nonce": nonce, "runtime": spec.runtime, "code": spec.code,
                              "input": spec.input, "env": dict(spec.env),
                              "output_bytes": spec.limits.output_bytes,
                              "memory_bytes": spec.limits.memory_bytes},
                             allow_nan=False).encode() + b"\n"
        except (TypeError, ValueError) as exc:
            raise ValueError(f"input is not JSON-serialisable: {exc}") from exc
        killed = threading.Event()
        self._register(spec.task_id, killed)
        deadline = time.time() + spec.limits.timeout_s
        handle: Handle | None = None
        finished = False
        try:
            handle = self._acquire(spec, key, deadline)
            outcome = self._drive(handle, job, nonce, spec, cancel, killed, deadline)
            # With a record the harness has already SIGKILLed every user process, so the
            # removal may finish in the background; otherwise remove before returning.
            finished = outcome.stopped is None and outcome.reader.record is not None
            result = classify(outcome, spec)
            result.container_id = handle.cid
            result.environment = {"runtime": spec.runtime, "image": key.image,
                                  "containerRuntime": self.container_runtime or "runc"}
            return result
        finally:
            self._unregister(spec.task_id, killed)
            if handle is not None:
                if finished and self.async_remove:
                    self._remove_later(handle, self.remove_delay_s)
                else:
                    self._discard(handle)

    def _drive(self, handle: Handle, job: bytes, nonce: str, spec: RunSpec,
               cancel: threading.Event | None, killed: threading.Event, deadline: float) -> Outcome:
        from sandbox.stream import AttachReader

        reader = AttachReader(handle.raw, nonce, spec.limits.output_bytes, self.log_tail_bytes)
        base = cgroups.read_host(handle.cid) if handle.pooled else None
        started = time.monotonic()
        hard_stop = started + spec.limits.timeout_s
        outcome = Outcome(reader=reader)
        try:
            reader.send(job)
        except OSError as exc:
            raise SandboxUnavailable(f"cannot send job to sandbox container: {exc}") from exc
        if handle.pooled:
            # Labels are immutable: a pooled container gets its task in its name, for kill_task and the reaper.
            # Renamed while the job runs (the engine's round trip overlaps the run instead of preceding it).
            try:
                self.api.rename(handle.cid, c.used_name(spec.task_id, spec.attempt, deadline))
            except Exception as exc:  # noqa: BLE001 - still usable; the idle deadline applies
                log.warning("sandbox: cannot rename pooled container: %s", exc)
        while not reader.done:
            now = time.monotonic()
            if (cancel is not None and cancel.is_set()) or killed.is_set():
                outcome.stopped = "cancelled"
                break
            if now >= hard_stop:
                outcome.stopped = "timeout"
                break
            reader.pump(min(_POLL_S, hard_stop - now))
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
        usage = cgroups.read_usage(self.api, handle.cid)
        if base is not None and base.cpu_ns is not None and usage.cpu_ns is not None:
            usage.cpu_ns = max(0, usage.cpu_ns - base.cpu_ns)
        outcome.usage = usage
        if reader.eof and reader.record is None and outcome.stopped is None:
            outcome.state = self._state(handle.cid)
        return outcome

    def _state(self, cid: str) -> dict[str, Any]:
        """The container's State after it exited on its own (best effort)."""
        state: dict[str, Any] = {}
        for _ in range(20):
            try:
                state = self.api.inspect_container(cid).get("State") or {}
            except docker.errors.NotFound:
                return {"Removed": True}
            except _ENGINE_ERRORS as exc:  # e.g. the engine is stopping: it took the container with it
                return {"EngineError": f"{type(exc).__name__}: {exc}"[:300]}
            except Exception:  # noqa: BLE001
                return {}
            if not state.get("Running"):
                return state
            time.sleep(0.05)
        return state

    # -- cancel / reap --------------------------------------------------------------------------
    def _register(self, task_id: str, event: threading.Event) -> None:
        with self._lock:
            self._killed.setdefault(task_id, set()).add(event)

    def _unregister(self, task_id: str, event: threading.Event) -> None:
        with self._lock:
            events = self._killed.get(task_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._killed[task_id]

    def kill_task(self, task_id: str) -> int:
        """Kill and remove all containers of ``task_id`` (any worker); return the count.

        A ``run`` of that task in this process returns ``CANCELLED``.
        """
        with self._lock:
            for event in self._killed.get(task_id, ()):
                event.set()
        try:
            return reaper_mod.kill_task(self.api, task_id)
        except _ENGINE_ERRORS as exc:
            raise SandboxUnavailable(f"cannot list sandbox containers: {exc}") from exc

    def reap(self, live_worker_ids: set[str] | None = None, now: float | None = None,
             worker_gone: Callable[[str], bool] | None = None) -> list[dict]:
        """Remove expired containers and those of gone workers (see :func:`sandbox.reaper.reap`)."""
        try:
            return reaper_mod.reap(self.api, live_worker_ids, now, self.reap_grace_s, labels=self.scope or None,
                                   worker_gone=worker_gone)
        except _ENGINE_ERRORS as exc:
            raise SandboxUnavailable(f"cannot list sandbox containers: {exc}") from exc


def _stream_closed(sock: Any) -> bool:
    """True when the engine closed a container's attach stream (an idle harness writes nothing)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0)) and sock.recv(1, socket.MSG_PEEK) == b""
    except ValueError:  # e.g. a TLS socket (no MSG_PEEK): cannot tell, the send will
        return False
    except OSError:
        return True
