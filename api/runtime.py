"""What a router process holds: settings, database, manager, publisher, dispatcher."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from taskexec.config import Settings
from taskexec.db import Database
from taskexec.dispatch import Dispatcher, Publisher
from taskexec.manager import TaskManager


@dataclass
class Runtime:
    settings: Settings
    db: Database
    manager: TaskManager
    publisher: Publisher
    dispatcher: Dispatcher | None = None


def runtime() -> Runtime:
    return current_app.extensions["taskexec"]
