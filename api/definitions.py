"""Task definitions: register (versioned), apply (register only if changed), list, get."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.io import definition_out, page, parse_body, parse_query
from api.routing import operation
from api.runtime import runtime
from api.security import current
from taskexec.contract.schemas import (
    DefinitionGetQuery,
    DefinitionIn,
    DefinitionListQuery,
    DefinitionOut,
    DefinitionPage,
)
from taskexec.core.constants import API_PREFIX, Permission
from taskexec.core.exceptions import field_error

bp = Blueprint("definitions", __name__, url_prefix=f"{API_PREFIX}/tasks/definitions")


@operation(bp, "POST", "", summary="Register a definition, or a new version of an existing id",
           permission=Permission.DEFINITIONS_WRITE, body=DefinitionIn, response=DefinitionOut, status=201,
           errors=(409,))
def create():
    body = parse_body(DefinitionIn)
    rt = runtime()
    with rt.db.session() as s:
        row = rt.manager.create_definition(s, body, current().sub)
        out = definition_out(row)
    return jsonify(out), 201


@operation(bp, "PUT", "/<def_id>", summary="Apply a definition: a new version only if it differs from the latest",
           permission=Permission.DEFINITIONS_WRITE, body=DefinitionIn, response=DefinitionOut, status=201,
           also={200: "unchanged: the latest version already says the same (nothing registered)"}, errors=(409,),
           unknown_id_is_404=False,
           description="Idempotent registration for definitions kept in files (`taskexec defs apply`). The "
                       "body is compared with the latest version after the normalisation a registration applies.")
def apply(def_id: str):
    body = parse_body(DefinitionIn)
    if body.id != def_id:
        raise field_error("id", f"the body's id {body.id!r} is not the path's {def_id!r}", status=422)
    rt = runtime()
    with rt.db.session() as s:
        row, created = rt.manager.apply_definition(s, body, current().sub)
        out = definition_out(row)
    return jsonify(out), 201 if created else 200


@operation(bp, "GET", "", summary="List definitions (latest versions)", permission=Permission.DEFINITIONS_LIST,
           query=DefinitionListQuery, response=DefinitionPage)
def list_():
    q = parse_query(DefinitionListQuery)
    rt = runtime()
    with rt.db.session() as s:
        rows, total = rt.manager.list_definitions(s, q)
        return jsonify(page([definition_out(r) for r in rows], q.page, q.limit, total))


@operation(bp, "GET", "/<def_id>", summary="A definition: the latest version, or `?version=`",
           permission=Permission.DEFINITIONS_READ, query=DefinitionGetQuery, response=DefinitionOut)
def get(def_id: str):
    q = parse_query(DefinitionGetQuery)  # ?version=1.2.0 (a semantic version), else the latest
    rt = runtime()
    with rt.db.session() as s:
        return jsonify(definition_out(rt.manager.get_definition(s, def_id, q.version)))
