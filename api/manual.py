"""People working manual tasks: claim, complete, reassign, and the inbox (`/api/v1`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy.orm import Session

from api.io import page, parse_body, parse_query, task_out
from api.routing import operation
from api.runtime import runtime
from api.security import audit_fields, current
from taskexec.contract.schemas import (
    ClaimOut,
    CompleteIn,
    CompleteOut,
    InboxDetail,
    InboxPage,
    PageQuery,
    ReassignIn,
    ReassignOut,
)
from taskexec.core.constants import API_PREFIX, AuditEvent, Permission
from taskexec.core.exceptions import TaskexecError
from taskexec.people.manual import Audit, ManualTasks
from taskexec.people.manual_timers import task_config
from taskexec.store.models import TaskInstance

bp = Blueprint("manual_tasks", __name__, url_prefix=API_PREFIX)


def _audit() -> Audit:
    fields = audit_fields()
    return Audit(actor=current().sub, ip=fields["ip"], user_agent=fields["user_agent"])


def _act(task_id: str, action: str, op: Callable[[ManualTasks, Session, Audit], TaskInstance]) -> TaskInstance:
    """Run one human action in its own transaction; a refusal is still written to the task's history."""
    rt = runtime()
    svc = ManualTasks(rt.manager)
    audit = _audit()
    try:
        with rt.db.session() as s:
            task = op(svc, s, audit)
    except TaskexecError as exc:
        if exc.status in (400, 403, 409, 422):
            with rt.db.session() as s:
                svc.record_rejection(s, task_id, current(), action, exc, audit)
        raise
    if rt.dispatcher:
        rt.dispatcher.wake.set()  # deliver the orchestrator event and notifications now
    return task


@operation(bp, "POST", "/tasks/<task_id>/claim", summary="Claim a manual task offered to you or your role",
           permission=Permission.CLAIM, response=ClaimOut, errors=(409,))
def claim(task_id: str) -> Any:
    task = _act(task_id, "claim", lambda svc, s, a: svc.claim(s, task_id, current(), a))
    return jsonify({"id": task.id, "status": task.status, "assignee": task.assignee,
                    "claimedAt": task.claimed_at.isoformat() if task.claimed_at else None})


@operation(bp, "POST", "/tasks/<task_id>/complete", summary="Complete a manual task with its output",
           permission=Permission.COMPLETE, body=CompleteIn, response=CompleteOut, errors=(409,),
           description="`output` is validated against the definition's `outputSchema` and, when it has one, its "
                       "`formSchema` (formats included); a 422 leaves the task open.")
def complete(task_id: str) -> Any:
    try:
        body = parse_body(CompleteIn)
    except TaskexecError as exc:
        rt = runtime()
        with rt.db.session() as s:
            ManualTasks(rt.manager).record_rejection(s, task_id, current(), "completion", exc, _audit())
        raise
    task = _act(task_id, "completion", lambda svc, s, a: svc.complete(s, task_id, current(), body.output, a))
    return jsonify({"id": task.id, "status": task.status, "completedBy": task.completed_by})


@operation(bp, "POST", "/tasks/<task_id>/reassign", summary="Reassign a manual task", permission=Permission.REASSIGN,
           body=ReassignIn, response=ReassignOut, errors=(409,))
def reassign(task_id: str) -> Any:
    body = parse_body(ReassignIn)
    task = _act(task_id, "reassignment",
                lambda svc, s, a: svc.reassign(s, task_id, current(), body.new_assignee, body.reason, a))
    return jsonify({"id": task.id, "status": task.status, "assignee": task.assignee})


@operation(bp, "GET", "/inbox", summary="Your open manual tasks, by priority then due date", permission=Permission.LIST,
           query=PageQuery, response=InboxPage)
def inbox() -> Any:
    q = parse_query(PageQuery)
    rt = runtime()
    who = current()
    with rt.db.session() as s:
        rows, total = ManualTasks(rt.manager).inbox(s, who, q.page, q.limit)
        items = [{**task_out(t), "taskName": name, "claimed": t.assignee == who.sub} for t, name in rows]
    return jsonify(page(items, q.page, q.limit, total))


@operation(bp, "GET", "/inbox/<task_id>", summary="One inbox task with its form", permission=Permission.READ,
           response=InboxDetail)
def inbox_item(task_id: str) -> Any:
    """One task with what a person needs to work it: its name, description and form (a recorded view)."""
    rt = runtime()
    who = current()
    svc = ManualTasks(rt.manager)
    with rt.db.session() as s:
        task = svc.load(s, task_id, who)
        definition, config = task_config(rt.manager, s, task)
        out: dict[str, Any] = {
            **task_out(task), "taskName": definition.name, "description": definition.description,
            "claimed": task.assignee == who.sub, "canClaim": svc.can_claim(task, who),
            "formSchema": config.get("formSchema") or definition.output_schema or {},
            "outputSchema": definition.output_schema or {},
        }
        a = _audit()
        rt.manager.record(s, task, AuditEvent.VIEWED, a.actor, ip=a.ip, user_agent=a.user_agent)
    return jsonify(out)
