"""The worker's consumer: Celery's own, with a remote-control mailbox that a client cannot wedge.

Celery answers any error while handling a control command (`celery inspect ...`, Flower's calls) by
resetting the mailbox: it closes the broadcast channel from inside that channel's own callback and
opens a new one. On the Redis transport this leaves kombu's poller without the consumer's sockets, so
the worker keeps its heartbeat and its probes green but never takes another message (seen with a
client whose reply binding kombu could not parse; celery#9237 and kombu#1365 describe relatives).
Here such an error is logged and the reply dropped; the mailbox and the task consumer keep going.
A broken connection still restarts the consumer the usual way (Celery's connection errors are not
handled here).

Installed with `worker_consumer` in `taskexec.broker.celery_app`; everything else is Celery's.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker import pidbox
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.consumer import control

log = logging.getLogger(__name__)


class Pidbox(pidbox.Pidbox):
    """Celery's mailbox without the reset on a failed command."""

    def on_message(self, body: Any, message: Any) -> None:
        self._forward_clock()
        try:
            self.node.handle_message(body, message)
        except KeyError as exc:
            log.error("no such control command: %s", exc)
        except Exception as exc:  # a bad request or an unroutable reply: answer nothing, keep consuming
            method = body.get("method") if isinstance(body, dict) else None
            log.error("control command failed; no reply sent", extra={"method": method, "error": repr(exc)})


class Control(control.Control):
    """The remote-control bootstep with `Pidbox` as its mailbox (threads pool: never green)."""

    name = "taskexec.control"

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.box = Pidbox(c)
        self.start = self.box.start
        self.stop = self.box.stop
        self.shutdown = self.box.shutdown


class Consumer(CeleryConsumer):
    """Celery's consumer with `Control` swapped for ours."""

    class Blueprint(CeleryConsumer.Blueprint):
        default_steps = [
            f"{__name__}:Control" if step == "celery.worker.consumer.control:Control" else step
            for step in CeleryConsumer.Blueprint.default_steps
        ]


CONSUMER = f"{__name__}:Consumer"
