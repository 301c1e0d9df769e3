"""The event-loop waker (workers/wakeup.py) on a real kombu Hub, the loop Celery's consumer runs."""

from __future__ import annotations

import threading
import time

from kombu.asynchronous import Hub
from kombu.asynchronous.timer import Timer

from workers import wakeup
from workers.wakeup import LoopWaker


def test_wake_from_another_thread_ends_the_poll_at_once() -> None:
    hub, waker = Hub(timer=Timer(max_interval=30)), LoopWaker()
    ticks: list[float] = []
    hub.on_tick.add(lambda: ticks.append(time.monotonic()))
    hub.call_later(60, lambda: None)  # the next timer is far away: the loop would sleep 10 s (kombu's cap)
    waker.attach(hub)
    try:
        threading.Timer(0.2, waker.wake).start()
        start = time.monotonic()
        hub.run_once()  # ticks, then blocks in poll (10 s without a wake-up) until the byte arrives
        elapsed = time.monotonic() - start  # the loop turns again at once: kombu's Redis transport
        assert len(ticks) == 1                # issues BRPOP on that tick
        assert elapsed < 5, f"the loop slept through the wake-up ({elapsed:.1f} s)"
    finally:
        waker.detach(hub)
        hub.close()


def test_detach_is_idempotent_and_wake_after_it_is_a_no_op() -> None:
    hub, waker = Hub(), LoopWaker()
    waker.attach(hub)
    waker.attach(hub)  # a consumer restart: the old pipe is replaced, not leaked
    assert len(hub.readers) == 1
    for _ in range(100_000):  # far more than a pipe holds: a full pipe never blocks the caller
        waker.wake()
    waker.detach(hub)
    waker.detach(hub)
    assert not hub.readers
    waker.wake()
    hub.close()


def test_every_worker_task_acks_through_the_waking_request() -> None:
    from workers.app import app

    ours = [t for name, t in app.tasks.items() if name.startswith("taskexec.")]
    assert len(ours) >= 4  # three execute tasks and the sweep
    assert {t.Request for t in ours} == {"workers.wakeup:WakingRequest"}
    assert f"{wakeup.__name__}:{wakeup.WakingRequest.__name__}" == wakeup.REQUEST
