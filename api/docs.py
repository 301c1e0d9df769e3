"""`/docs`: Swagger UI over `/openapi.json`, served from the `flask-swagger-ui` package (no CDN, works offline).

Only the package's asset files are used; the page and its start-up script are ours (`static/docs/`), so the
same strict Content-Security-Policy as the other pages applies (no inline script). "Try it out" is on, and
"Authorize" takes a JWT (bearer) or an API key (`X-API-Key`).
"""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Flask, Response, jsonify, send_from_directory

from api.openapi import build_spec
from api.pages import page_blueprint
from taskexec.core.exceptions import NotFound

SWAGGER_DIST = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
SWAGGER_ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "favicon-16x16.png"})

bp = page_blueprint("docs", "docs", "/docs")


@bp.get("/docs/swagger-ui/<name>")
def swagger_asset(name: str) -> Response:
    if name not in SWAGGER_ASSETS:
        raise NotFound(f"no asset {name!r}")
    return send_from_directory(SWAGGER_DIST, name, max_age=3600)


def register_docs(app: Flask) -> None:
    """`/openapi.json` (built once, from every route registered so far) and the `/docs` page."""
    spec = build_spec(app)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(spec)

    app.register_blueprint(bp)
