"""Serving the router's static web pages (inbox, dashboard): no build step, strict security headers.

The pages need no credentials themselves; they ask for a token and send it as `Authorization: Bearer`
on every API call.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

STATIC_ROOT = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def page_blueprint(name: str, folder: str, mount: str) -> Blueprint:
    """A blueprint serving ``static/<folder>/index.html`` at ``mount`` and its assets under ``mount/static``."""
    directory = STATIC_ROOT / folder
    bp = Blueprint(name, __name__, static_folder=str(directory), static_url_path=f"{mount}/static")

    def page() -> Response:
        resp = send_from_directory(directory, "index.html", mimetype="text/html", max_age=0)
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    bp.add_url_rule(mount, "page", page)
    bp.add_url_rule(f"{mount}/", "page_slash", page)
    return bp
