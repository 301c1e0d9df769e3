"""Wake the consumer's event loop as soon as a pool thread acknowledges a task.

With the threads pool and the Redis transport, a late ack (``acks_late``, prefetch 1) frees the
worker's prefetch slot in a pool thread, but kombu only issues the next ``BRPOP`` on the event
loop's next tick, and the loop sleeps in ``epoll`` until its next timer (the 2 s event heartbeat).
A burst of tasks therefore ran in pairs two seconds apart. The fix is the classic self-pipe: the
consumer bootstep registers a pipe with the hub, and the request class writes one byte to it after
each ack or reject, which turns the ack into an immediate tick. AMQP does not need it (the broker
pushes the next message, which wakes the loop), but it costs one byte per task there too.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from celery import bootsteps
from celery.worker.request import Request


class LoopWaker:
    """A self-pipe registered as a reader on the consumer's hub."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fds: tuple[int, int] | None = None

    def attach(self, hub: Any) -> None:
        self.detach(hub)  # a consumer restart starts the step again
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        with self._lock:
            self._fds = (r, w)
        hub.add_reader(r, self._drain, r)

    def detach(self, hub: Any) -> None:
        with self._lock:
            fds, self._fds = self._fds, None
        if fds is None:
            return
        try:
            hub.remove_reader(fds[0])
        finally:
            for fd in fds:
                os.close(fd)

    def wake(self) -> None:
        """Make the event loop run one more tick now (any thread; never blocks)."""
        with self._lock:
            if self._fds is None:
                return
            with contextlib.suppress(BlockingIOError):  # a full pipe: a wake-up is already pending
                os.write(self._fds[1], b"\0")

    @staticmethod
    def _drain(fd: int) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError once empty
            while os.read(fd, 4096):
                pass


WAKER = LoopWaker()
REQUEST = "workers.wakeup:WakingRequest"  # the `Request` of every task the worker pools run


class WakingRequest(Request):
    """Celery's request, waking the event loop once its message is acknowledged or rejected."""

    def acknowledge(self) -> None:
        super().acknowledge()
        WAKER.wake()

    def reject(self, requeue: bool = False) -> None:
        super().reject(requeue=requeue)
        WAKER.wake()


class EventLoopWaker(bootsteps.StartStopStep):
    """Consumer bootstep: attach the waker to the hub while the broker connection is up."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, parent: Any) -> None:
        if parent.hub is not None:  # no hub: a pool without an event loop (solo, eventlet)
            WAKER.attach(parent.hub)

    def stop(self, parent: Any) -> None:
        if parent.hub is not None:
            WAKER.detach(parent.hub)

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
