"""The web inbox at `/inbox`: a static page (HTML, CSS, vanilla JS) over the public API.

It calls `GET /api/v1/inbox`, `GET /api/v1/inbox/<id>` and `POST /api/v1/tasks/<id>/claim|complete`.
"""

from __future__ import annotations

from api.pages import page_blueprint

bp = page_blueprint("inbox_page", "inbox", "/inbox")
