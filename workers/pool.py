"""The pools' execution pool: Celery's thread pool, resizable at run time.

Celery's own `threads` pool cannot grow or shrink, so `celery control pool_grow`/`pool_shrink` and
`--autoscale` fail on it. This one can: its size is the executor's thread ceiling. Growing raises the
ceiling (threads start on demand); shrinking lowers it, running tasks finish, and idle threads above
the ceiling stay parked (a thread costs a few dozen KiB). What bounds the tasks running at once is
the consumer's prefetch count, which Celery's `pool_grow`/`pool_shrink` commands and the autoscaler
move together with the size. The workers' app selects it (`worker_pool` in `workers.app`).
"""

from __future__ import annotations

import threading
from typing import Any

from celery.concurrency import thread

from workers import metrics_hooks


class ThreadPool(thread.TaskPool):
    """`celery.concurrency.thread.TaskPool` plus `grow`, `shrink` and a live `num_processes`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resize = threading.Lock()

    @property
    def num_processes(self) -> int:
        return self.limit

    def grow(self, n: int = 1) -> None:
        self._set_limit(self.limit + max(0, n))

    def shrink(self, n: int = 1) -> None:
        if self.limit - n < 1:
            raise ValueError(f"cannot shrink a pool of {self.limit} by {n}: at least one slot stays")
        self._set_limit(self.limit - n)

    def _set_limit(self, limit: int) -> None:
        with self._resize:
            self.limit = limit
            self.executor._max_workers = limit  # read on every submit: threads start up to this ceiling
        metrics_hooks.set_concurrency(limit)


POOL = f"{__name__}:ThreadPool"
