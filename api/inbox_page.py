"""The web inbox at `/inbox`: a static page (HTML, CSS, vanilla JS) over the public API, no build step.

The page itself needs no credentials; it asks for a token and sends it as `Authorization: Bearer` on
every API call (`GET /api/v1/inbox`, `GET /api/v1/inbox/<id>`, `POST /api/v1/tasks/<id>/claim|complete`).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

STATIC = Path(__file__).resolve().parent / "static" / "inbox"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

bp = Blueprint("inbox_page", __name__, static_folder=str(STATIC), static_url_path="/inbox/static")


@bp.get("/inbox")
@bp.get("/inbox/")
def page() -> Response:
    resp = send_from_directory(STATIC, "index.html", mimetype="text/html", max_age=0)
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp
