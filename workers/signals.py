"""Signals an execute task sends around one attempt, for hooks (metrics, log context) to connect to.

`attempt_started(sender=task, job=..., context=...)` once the router said the attempt runs;
`attempt_finished(sender=task, job=..., outcome=..., context=...)` when its result is known.
`context` is {taskId, attempt, definition, correlationId}. Receivers' errors are logged by Celery
and never fail the task.
"""

from __future__ import annotations

from celery.utils.dispatch import Signal

attempt_started = Signal(name="taskexec.attempt_started", providing_args={"job", "context"})
attempt_finished = Signal(name="taskexec.attempt_finished", providing_args={"job", "outcome", "context"})
