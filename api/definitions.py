"""Task definitions: register (versioned), list, get."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.io import definition_out, page, parse_body, parse_query
from api.runtime import runtime
from api.security import current, require
from taskexec.constants import API_PREFIX, Permission
from taskexec.schemas import DefinitionGetQuery, DefinitionIn, DefinitionListQuery

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
    q = parse_query(DefinitionGetQuery)  # ?version=1.2.0 (a semantic version), else the latest
    rt = runtime()
    with rt.db.session() as s:
        return jsonify(definition_out(rt.manager.get_definition(s, def_id, q.version)))
