"""Dead letters: `GET /api/v1/deadletters` (operations staff) and `POST .../{id}/redrive` (admin)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.io import page, parse_query
from api.routing import operation
from api.runtime import runtime
from api.security import current
from taskexec.contract.schemas import DeadLetterPage, DeadLetterQuery, RedriveOut
from taskexec.core.constants import API_PREFIX, Permission
from taskexec.core.exceptions import Forbidden
from taskexec.services.deadletters import DeadLetters, dead_letter_out

bp = Blueprint("deadletters", __name__, url_prefix=f"{API_PREFIX}/deadletters")

# Who may list: admins and principals who see every task (submitters, developers, monitors).
# The contract's `operator` role works manual tasks and sees only its own, so it is refused.
_LIST_ANY = (Permission.EXECUTE, Permission.MONITOR)


@operation(bp, "GET", "", summary="Tasks whose retries are spent", permission=Permission.LIST, query=DeadLetterQuery,
           response=DeadLetterPage, description="Admins and principals with `tasks:execute` or `tasks:monitor`.")
def list_():
    who = current()
    if not (who.is_admin or any(who.has(p) for p in _LIST_ANY)):
        raise Forbidden("listing dead letters needs admin, tasks:execute or tasks:monitor",
                        details={"permission": Permission.ADMIN.value})
    q = parse_query(DeadLetterQuery)
    rt = runtime()
    with rt.db.session() as s:
        rows, total = DeadLetters(rt.settings).list(s, q)
        return jsonify(page([dead_letter_out(r, t) for r, t in rows], q.page, q.limit, total))


@operation(bp, "POST", "/<dead_letter_id>/redrive", summary="Re-drive a dead letter: the same task runs again",
           permission=Permission.ADMIN, response=RedriveOut, errors=(409,))
def redrive(dead_letter_id: str):
    rt = runtime()
    with rt.db.session() as s:
        row, task = DeadLetters(rt.settings).redrive(s, dead_letter_id, current().sub)
        body = {"id": row.id, "taskId": task.id, "status": task.status,
                "redrivenAt": row.redriven_at.isoformat() if row.redriven_at else None}
    if rt.dispatcher:
        rt.dispatcher.wake.set()
    return jsonify(body)
