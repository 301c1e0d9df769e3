"""A small pool of pre-started, never-reused sandbox containers.

Starting a container is most of the cost of a short task. The pool keeps ``size`` started
containers per :class:`ContainerKey` (image, limits class, network, worker), each blocked in
the harness waiting for its single job on an already open attach socket. ``take`` hands one
out (it is removed after its one job by the runner) and a background thread refills.
Idle containers carry the worker id and a deadline of ``created + idle_ttl`` so that the
reaper removes them if this worker dies; the pool itself recycles them before that.
Correctness never depends on the pool: ``take`` returning None means "start a fresh one".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.containers import ContainerKey

log = logging.getLogger(__name__)


@dataclass
class Handle:
    """A started container with its attach socket open."""

    cid: str
    sock: Any  # docker-py attach socket (keep a reference: it owns the connection)
    raw: Any  # underlying socket.socket
    key: ContainerKey
    pooled: bool
    created: float = field(default_factory=time.time)


class ContainerPool:
    """Pre-started containers per key; thread-safe."""

    def __init__(self, start: Callable[[ContainerKey], Handle], discard: Callable[[Handle], None],
                 size: int = 2, idle_ttl: float = 600.0, max_keys: int = 4, refill_delay_s: float = 0.2) -> None:
        self._start = start
        self._discard = discard
        self.size = size
        self.idle_ttl = idle_ttl
        self.max_keys = max_keys
        self.refill_delay_s = refill_delay_s
        self._idle: OrderedDict[ContainerKey, deque[Handle]] = OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def take(self, key: ContainerKey) -> Handle | None:
        """An idle container for ``key`` (None if none ready); registers the key for refill."""
        if self.size <= 0 or self._closed:
            return None
        evicted: list[Handle] = []
        with self._lock:
            queue = self._idle.get(key)
            if queue is None:
                queue = self._idle[key] = deque()
                while len(self._idle) > self.max_keys:
                    _, old = self._idle.popitem(last=False)
                    evicted.extend(old)
            self._idle.move_to_end(key)
            handle = None
            while queue:
                candidate = queue.popleft()
                if time.time() - candidate.created < self.idle_ttl * 0.9:
                    handle = candidate
                    break
                evicted.append(candidate)
        for old_handle in evicted:
            self._discard(old_handle)
        self._ensure_thread()
        self._wake.set()
        return handle

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="sandbox-pool", daemon=True)
            self._thread.start()

    def _next_missing(self) -> ContainerKey | None:
        with self._lock:
            for key, queue in reversed(self._idle.items()):
                if len(queue) < self.size:
                    return key
        return None

    def _expire(self) -> None:
        stale: list[Handle] = []
        with self._lock:
            for queue in self._idle.values():
                while queue and time.time() - queue[0].created >= self.idle_ttl * 0.9:
                    stale.append(queue.popleft())
        for handle in stale:
            self._discard(handle)

    def _loop(self) -> None:
        failures = 0
        while not self._closed:
            self._expire()
            key = self._next_missing()
            if key is None:
                self._wake.wait(timeout=5.0)
                self._wake.clear()
                if self.refill_delay_s and not self._closed:
                    time.sleep(self.refill_delay_s)
                continue
            try:
                handle: Handle | None = self._start(key)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - engine hiccup: back off, fresh starts still work
                failures += 1
                log.warning("sandbox pool: cannot pre-start container: %s", exc)
                self._wake.wait(timeout=min(30.0, 0.5 * 2**failures))
                self._wake.clear()
                continue
            with self._lock:
                queue = self._idle.get(key)
                if queue is not None and not self._closed and handle is not None:
                    queue.append(handle)
                    handle = None
            if handle is not None:
                self._discard(handle)

    def idle_count(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._idle.values())

    def close(self) -> None:
        """Stop refilling and remove every idle container."""
        self._closed = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        with self._lock:
            handles = [h for q in self._idle.values() for h in q]
            self._idle.clear()
        for handle in handles:
            self._discard(handle)
