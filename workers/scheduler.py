"""Periodic jobs: `taskexec beat` sends them, the pools carry them out."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from taskexec.clients.client import RouterClient
from taskexec.core.config import Settings, get_settings
from taskexec.core.constants import CELERY_TASK_SWEEP, Pool

log = logging.getLogger(__name__)

# name -> (seconds between runs, pool whose queue carries it)
SWEEPS: dict[str, tuple[float, str]] = {
    "dispatch": (5.0, Pool.MANUAL),   # publish due retries and tasks stuck unpublished after a broker outage
    "outbox": (5.0, Pool.MANUAL),     # deliver orchestrator events the router could not send yet
    "reap": (30.0, Pool.AUTOMATED),   # remove sandbox containers past their deadline or of dead workers
    "stale": (30.0, Pool.MANUAL),     # RUNNING tasks past their deadline + grace whose worker is gone
    "queued": (30.0, Pool.MANUAL),    # PENDING tasks no worker took before their queued timeout (QUEUE_TIMEOUT)
    "reminders": (15.0, Pool.MANUAL),    # manual-task reminders (interval: TEL_MANUAL_SWEEP_INTERVAL)
    "escalations": (15.0, Pool.MANUAL),  # manual tasks past their deadline (interval: TEL_MANUAL_SWEEP_INTERVAL)
}
MANUAL_TIMER_SWEEPS = ("reminders", "escalations")


def beat_schedule(settings: Settings) -> dict[str, Any]:
    queues: dict[str, str] = {Pool.MANUAL: settings.queue_manual, Pool.AUTOMATED: settings.queue_automated}
    sweeps = {name: (settings.manual_sweep_interval_s if name in MANUAL_TIMER_SWEEPS else every, pool)
              for name, (every, pool) in SWEEPS.items()}
    return {
        f"sweep-{name}": {"task": CELERY_TASK_SWEEP, "schedule": every, "args": (name,),
                          "options": {"queue": queues[pool], "expires": every * 2}}
        for name, (every, pool) in sweeps.items()
    }


def configure_beat(app: Celery, settings: Settings) -> None:
    app.conf.beat_schedule = beat_schedule(settings)


def run_sweep(name: str) -> Any:
    if name == "reap":
        from workers.automated import reap_and_report

        return reap_and_report()
    client = RouterClient(get_settings(), retry_for_s=10)
    try:
        return client.sweep(name)
    finally:
        client.close()
