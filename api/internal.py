"""The internal API the worker pools report through (service credential, `tasks:internal`)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.io import parse_body
from api.runtime import runtime
from api.security import current, require
from taskexec.constants import INTERNAL_PREFIX, Permission
from taskexec.dispatch import dispatch_due, republish_overdue
from taskexec.exceptions import NotFound
from taskexec.outbox import deliver_due
from taskexec.queue_timeout import QueueTimeouts
from taskexec.recovery import Recovery
from taskexec.schemas import DeferIn, FinishIn, LostIn, StartIn

bp = Blueprint("internal", __name__, url_prefix=INTERNAL_PREFIX)


@bp.post("/tasks/<task_id>/start")
@require(Permission.INTERNAL)
def start(task_id: str):
    body = parse_body(StartIn)
    rt = runtime()
    with rt.db.session() as s:
        return jsonify(rt.manager.start(s, task_id, body.dispatch_token, body.worker_id, body.start_id))


@bp.post("/tasks/<task_id>/assign")
@require(Permission.INTERNAL)
def assign(task_id: str):
    body = parse_body(StartIn)
    rt = runtime()
    with rt.db.session() as s:
        task = rt.manager.assign(s, task_id, body.dispatch_token, body.worker_id)
    _wake()
    return jsonify({"id": task.id, "status": task.status})


@bp.post("/tasks/<task_id>/finish")
@require(Permission.INTERNAL)
def finish(task_id: str):
    body = parse_body(FinishIn, scrub_nul=True)  # user code may print NUL bytes; keep its result
    rt = runtime()
    with rt.db.session() as s:
        task = rt.manager.finish(s, task_id, body, current().sub)
    _wake()
    return jsonify({"id": task.id, "status": task.status, "retryCount": task.retry_count})


@bp.post("/tasks/<task_id>/defer")
@require(Permission.INTERNAL)
def defer(task_id: str):
    """Put a running attempt back to wait (e.g. its target's rate limit); not counted as a retry."""
    body = parse_body(DeferIn)
    rt = runtime()
    with rt.db.session() as s:
        task = rt.manager.defer(s, task_id, body.attempt, body.delay_ms / 1000.0, body.reason, current().sub)
        result = {"id": task.id, "status": task.status, "retryCount": task.retry_count}
    _wake()
    return jsonify(result)


@bp.post("/tasks/<task_id>/lost")
@require(Permission.INTERNAL)
def lost(task_id: str):
    """The reaper removed this attempt's container because its worker is gone."""
    body = parse_body(LostIn)
    rt = runtime()
    with rt.db.session() as s:
        task = Recovery(rt.manager).lost(s, task_id, body.attempt, body.reason, actor=current().sub)
        result = {"id": task_id, "changed": task is not None, "status": task.status if task else None}
    _wake()
    return jsonify(result)


@bp.get("/tasks/<task_id>/status")
@require(Permission.INTERNAL)
def status(task_id: str):
    rt = runtime()
    with rt.db.session() as s:
        task = rt.manager.get_task(s, task_id)
        return jsonify({"id": task.id, "status": task.status, "attempt": task.attempt})


@bp.post("/sweeps/<name>")
@require(Permission.INTERNAL)
def sweep(name: str):
    rt = runtime()
    if name == "dispatch":
        published = dispatch_due(rt.db, rt.publisher)
        published += republish_overdue(rt.db, rt.publisher, rt.settings.visibility_timeout_s)
        return jsonify({"published": published})
    if name == "outbox":
        http = rt.dispatcher.http if rt.dispatcher else None
        import requests

        return jsonify({"delivered": deliver_due(rt.db, rt.settings, http or requests.Session())})
    if name == "stale":
        with rt.db.session() as s:
            failed = Recovery(rt.manager).stale(s)
        _wake()
        return jsonify({"stale": failed})
    if name == "queued":
        with rt.db.session() as s:
            timed_out = QueueTimeouts(rt.settings).sweep(s)
        return jsonify({"queued": timed_out})
    if name in ("reminders", "escalations"):
        from taskexec.manual_timers import TimerSweeps

        done = getattr(TimerSweeps(rt.manager, rt.db), name)()
        _wake()
        return jsonify({name: done})
    raise NotFound(f"unknown sweep {name!r}")


def _wake() -> None:
    rt = runtime()
    if rt.dispatcher:
        rt.dispatcher.wake.set()
