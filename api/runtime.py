"""What a router process holds: settings, database, manager, the hot paths, publisher, outbox, dispatcher."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from taskexec.config import Settings
from taskexec.db import Database
from taskexec.dispatch import Dispatcher, EnqueueMarks, Publisher
from taskexec.keywatch import KeyWatch
from taskexec.lifecycle import Lifecycle
from taskexec.manager import TaskManager
from taskexec.outbox import Deliverer


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
