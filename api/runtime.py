"""What a router process holds: settings, database, manager, the hot paths, publisher, outbox, dispatcher."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from taskexec.core.config import Settings
from taskexec.services.dispatch import Dispatcher, EnqueueMarks, Publisher
from taskexec.services.lifecycle import Lifecycle
from taskexec.services.manager import TaskManager
from taskexec.services.outbox import Deliverer
from taskexec.store.db import Database
from taskexec.store.keywatch import KeyWatch


@dataclass
class Runtime:
    settings: Settings
    db: Database
    manager: TaskManager
    lifecycle: Lifecycle
    publisher: Publisher
    deliverer: Deliverer
    dispatcher: Dispatcher | None = None
    keywatch: KeyWatch | None = None  # while it listens, verified API keys are cached

    @property
    def marks(self) -> EnqueueMarks | None:
        """Where submits leave their `enqueued_at` for the dispatcher (None: no dispatcher, mark at once)."""
        return self.dispatcher.marks if self.dispatcher else None


def runtime() -> Runtime:
    return current_app.extensions["taskexec"]
