"""Fixtures of the end-to-end tests that drive a real browser."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"  # Debian's package, installed by scripts/bootstrap.sh
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A page in headless Chromium (Playwright driving the system browser; no browser download)."""
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} missing: run scripts/bootstrap.sh (installs chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        yield page
        browser.close()


ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """`tests/artifacts/<test name>/` (git-ignored): screenshots kept after the run, printed at the end."""
    path = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.png"):
        old.unlink()
    print(f"artifacts: {path}")
    return path
