"""Task definitions: register (versioned), list, get."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from api.io import definition_out, page, parse_body, parse_query
from api.runtime import runtime
from api.security import current, require
from taskexec.constants import API_PREFIX, Permission
from taskexec.exceptions import BadRequest
from taskexec.schemas import DefinitionIn, DefinitionListQuery

bp = Blueprint("definitions", __name__, url_prefix=f"{API_PREFIX}/tasks/definitions")


@bp.post("")
@require(Permission.DEFINITIONS_WRITE)
def create():
    body = parse_body(DefinitionIn)
    rt = runtime()
    with rt.db.session() as s:
        row = rt.manager.create_definition(s, body, current().sub)
        out = definition_out(row)
    return jsonify(out), 201


@bp.get("")
@require(Permission.DEFINITIONS_LIST)
def list_():
    q = parse_query(DefinitionListQuery)
    rt = runtime()
    with rt.db.session() as s:
        rows, total = rt.manager.list_definitions(s, q)
        return jsonify(page([definition_out(r) for r in rows], q.page, q.limit, total))


@bp.get("/<def_id>")
@require(Permission.DEFINITIONS_READ)
def get(def_id: str):
    raw = request.args.get("version")
    version = None
    if raw is not None:
        if not raw.isdigit() or int(raw) < 1:
            raise BadRequest("version must be a positive integer",
                             details=[{"field": "version", "message": "not a positive integer"}])
        version = int(raw)
    rt = runtime()
    with rt.db.session() as s:
        return jsonify(definition_out(rt.manager.get_definition(s, def_id, version)))
