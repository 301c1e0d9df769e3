"""`/docs` in a real headless Chromium: Swagger UI (from the installed package, no network) renders every
operation of /openapi.json, takes a bearer token in "Authorize", and "Try it out" really calls the router."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import make_token
from tests.support import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_swagger_ui_authorizes_and_tries_an_operation(stack: Stack, browser_page: Any, artifacts: Path) -> None:
    page = browser_page
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(stack.url) else None)
    page.goto(f"{stack.url}/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20000)
    spec = requests.get(f"{stack.url}/openapi.json", timeout=10).json()
    operations = sum(len(ops) for ops in spec["paths"].values())
    assert page.locator(".swagger-ui .opblock").count() == operations

    page.click("button.authorize")
    bearer = page.locator(".auth-container", has_text="bearer")
    bearer.locator("input").fill(make_token("doris", ("developer",)))
    bearer.locator("button.authorize").click()
    page.click("button.btn-done")

    me = page.locator(".opblock", has=page.locator(".opblock-summary-path[data-path='/api/v1/me']"))
    me.locator(".opblock-summary").click()
    me.locator("button.execute").click()
    response = me.locator(".live-responses-table tr.response .response-col_status").first
    response.wait_for(timeout=15000)
    assert response.inner_text().strip().startswith("200")
    body = me.locator(".live-responses-table tr.response .response-col_description pre").first.inner_text()
    assert '"sub": "doris"' in body and "tasks:definitions:write" in body
    page.screenshot(path=str(artifacts / "docs.png"), full_page=False)
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
    assert outside == [], outside  # no CDN, no validator: everything from the router
