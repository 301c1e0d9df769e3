"""The internal API the worker pools report through (service credential, `tasks:internal`).

The messages are the models of `taskexec.contract.protocol`. Each report (start, assign, finish, defer, lost)
has its own endpoint, and ``POST /internal/v1/reports`` takes several at once (a pool coalesces the
reports of its threads): each is handled in its own transaction, exactly as its own endpoint would,
and answered in order with that endpoint's status and body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from flask import Blueprint, jsonify
from pydantic import BaseModel

from api.io import parse_body
from api.runtime import Runtime, runtime
from api.security import current, require
from taskexec.contract.protocol import (
    AssignReport,
    DeferIn,
    DeferReport,
    FinishIn,
    FinishReport,
    LostIn,
    LostOut,
    LostReport,
    Report,
    ReportOut,
    ReportsIn,
    ReportsOut,
    StartIn,
    StartReport,
    TaskStateOut,
    TaskStatusOut,
)
from taskexec.contract.schemas import ErrorBody
from taskexec.core.constants import INTERNAL_PREFIX, Permission, Status
from taskexec.core.exceptions import NotFound, TaskexecError
from taskexec.services.dispatch import dispatch_due, republish_overdue
from taskexec.services.outbox import deliver_due
from taskexec.services.queue_timeout import QueueTimeouts
from taskexec.services.recovery import Recovery

bp = Blueprint("internal", __name__, url_prefix=INTERNAL_PREFIX)
log = logging.getLogger(__name__)


# ------------------------------------------------------------ one handler per report kind
# Each returns the answer model and whether the task changed in a way the dispatcher should act on.

def _start(rt: Runtime, r: StartReport, _actor: str) -> tuple[BaseModel, bool]:
    return rt.lifecycle.start(r.task_id, r), False


def _assign(rt: Runtime, r: AssignReport, _actor: str) -> tuple[BaseModel, bool]:
    with rt.db.session() as s:
        task = rt.manager.assign(s, r.task_id, r.dispatch_token, r.worker_id)
        return TaskStateOut(id=task.id, status=Status(task.status), retry_count=task.retry_count), True


def _finish(rt: Runtime, r: FinishReport, actor: str) -> tuple[BaseModel, bool]:
    return rt.lifecycle.finish(r.task_id, r, actor), True


def _defer(rt: Runtime, r: DeferReport, actor: str) -> tuple[BaseModel, bool]:
    with rt.db.session() as s:
        task = rt.manager.defer(s, r.task_id, r.attempt, r.delay_ms / 1000.0, r.reason, actor)
        return TaskStateOut(id=task.id, status=Status(task.status), retry_count=task.retry_count), True


def _lost(rt: Runtime, r: LostReport, actor: str) -> tuple[BaseModel, bool]:
    with rt.db.session() as s:
        task = Recovery(rt.manager).lost(s, r.task_id, r.attempt, r.reason, actor=actor)
        return LostOut(id=r.task_id, changed=task is not None, status=Status(task.status) if task else None), True


_HANDLERS: dict[str, Callable[[Runtime, Any, str], tuple[BaseModel, bool]]] = {
    "start": _start, "assign": _assign, "finish": _finish, "defer": _defer, "lost": _lost}


def _single(report: Report) -> Any:
    rt = runtime()
    answer, changed = _HANDLERS[report.kind](rt, report, current().sub)
    if changed:
        _wake()
    return jsonify(answer.model_dump(mode="json", by_alias=True))


@bp.post("/tasks/<task_id>/start")
@require(Permission.INTERNAL)
def start(task_id: str):
    return _single(StartReport(task_id=task_id, **dict(parse_body(StartIn))))


@bp.post("/tasks/<task_id>/assign")
@require(Permission.INTERNAL)
def assign(task_id: str):
    return _single(AssignReport(task_id=task_id, **dict(parse_body(StartIn))))


@bp.post("/tasks/<task_id>/finish")
@require(Permission.INTERNAL)
def finish(task_id: str):
    body = parse_body(FinishIn, scrub_nul=True)  # user code may print NUL bytes; keep its result
    return _single(FinishReport(task_id=task_id, **dict(body)))


@bp.post("/tasks/<task_id>/defer")
@require(Permission.INTERNAL)
def defer(task_id: str):
    """Put a running attempt back to wait (e.g. its target's rate limit); not counted as a retry."""
    return _single(DeferReport(task_id=task_id, **dict(parse_body(DeferIn))))


@bp.post("/tasks/<task_id>/lost")
@require(Permission.INTERNAL)
def lost(task_id: str):
    """The reaper removed this attempt's container because its worker is gone."""
    return _single(LostReport(task_id=task_id, **dict(parse_body(LostIn))))


@bp.post("/reports")
@require(Permission.INTERNAL)
def reports():
    """Several reports of one pool in one call; one answer each, in order (a failed one fails alone).
    The starts are handled together, and so are the finishes (one statement each for the common case)."""
    items = parse_body(ReportsIn, scrub_nul=True).items
    rt = runtime()
    actor = current().sub
    results: list[ReportOut | None] = [None] * len(items)
    starts = [(i, r) for i, r in enumerate(items) if isinstance(r, StartReport)]
    finishes = [(i, r) for i, r in enumerate(items) if isinstance(r, FinishReport)]
    groups: list[tuple[list[int], Callable[[], Sequence[BaseModel | TaskexecError]]]] = [
        ([i for i, _ in starts], lambda: rt.lifecycle.start_many([(r.task_id, r) for _, r in starts])),
        ([i for i, _ in finishes], lambda: rt.lifecycle.finish_many([(r.task_id, r) for _, r in finishes], actor)),
    ]
    for indexes, run in groups:
        if indexes:
            try:
                answers = run()
            except Exception as exc:  # the group's transaction failed: each of its reports says so
                answers = [_as_error(exc, items[indexes[0]])] * len(indexes)
            for i, answer in zip(indexes, answers, strict=True):
                results[i] = _out(answer)
    for i, report in enumerate(items):
        if results[i] is None:
            try:
                answer, _ = _HANDLERS[report.kind](rt, report, actor)
            except Exception as exc:
                answer = _as_error(exc, report)
            results[i] = _out(answer)
    if any(r.kind != "start" for r in items):
        _wake()
    return jsonify(ReportsOut(results=[r for r in results if r is not None]).model_dump(
        mode="json", by_alias=True, exclude_none=True))


def _as_error(exc: Exception, report: Report) -> TaskexecError:
    if isinstance(exc, TaskexecError):
        return exc
    log.exception("report failed", extra={"taskId": report.task_id, "kind": report.kind})
    return TaskexecError("internal error")  # one report's bug must not fail the others' (committed) answers


def _out(answer: BaseModel | TaskexecError) -> ReportOut:
    if isinstance(answer, TaskexecError):
        return ReportOut(status=answer.status, error=ErrorBody.model_validate(answer.error_body()))
    return ReportOut(status=200, result=answer.model_dump(mode="json", by_alias=True))


@bp.get("/tasks/<task_id>/status")
@require(Permission.INTERNAL)
def status(task_id: str):
    rt = runtime()
    with rt.db.session() as s:
        task = rt.manager.get_task(s, task_id)
        out = TaskStatusOut(id=task.id, status=Status(task.status), attempt=task.attempt)
    return jsonify(out.model_dump(mode="json", by_alias=True))


@bp.post("/sweeps/<name>")
@require(Permission.INTERNAL)
def sweep(name: str):
    rt = runtime()
    if name == "dispatch":
        published = dispatch_due(rt.db, rt.publisher)
        published += republish_overdue(rt.db, rt.publisher, rt.settings.visibility_timeout_s)
        return jsonify({"published": published})
    if name == "outbox":
        return jsonify({"delivered": deliver_due(rt.db, rt.settings, rt.deliverer)})
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
        from taskexec.people.manual_timers import TimerSweeps

        done = getattr(TimerSweeps(rt.manager, rt.db), name)()
        _wake()
        return jsonify({name: done})
    raise NotFound(f"unknown sweep {name!r}")


def _wake() -> None:
    rt = runtime()
    if rt.dispatcher:
        rt.dispatcher.wake.set()
