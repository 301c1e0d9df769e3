"""The operations dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Real router, AUTOMATED (Docker sandbox) and MANUAL worker processes produce completed, failed, running
and assigned tasks; the page must render them (cards, charts, tables, the task page) from PostgreSQL.
Screenshots are saved to the test's tmp dir; the test fails if the page does not show the data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import make_token
from tests.e2e.helpers import ADMIN, define, python_def, submit, wait_status
from tests.manual_support import manual_def
from tests.support import Stack, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def busy_stack(stack: Stack) -> Iterator[dict[str, str]]:
    """Two completed, one failed, one running (sleeping) automated task and one assigned manual task."""
    stack.start_worker("automated", concurrency=2, TEL_METRICS_PORT="0")
    stack.start_worker("manual", concurrency=1, TEL_METRICS_PORT="0")
    define(stack, python_def("dash-ok", "def main(input):\n    return {'ok': True}\n"))
    define(stack, python_def("dash-fail", "import sys\ndef main(input):\n    print('disk full', file=sys.stderr)\n"
                                          "    sys.exit(2)\n"))
    define(stack, python_def("dash-sleep", "import time\ndef main(input):\n    time.sleep(90)\n",
                             resourceRequirements={"timeoutSeconds": 120}))
    define(stack, manual_def("dash-review", deadlineSeconds=1800))
    ids = {"ok1": submit(stack, "dash-ok").json()["id"], "ok2": submit(stack, "dash-ok").json()["id"],
           "bad": submit(stack, "dash-fail", {"file": "report.csv"}).json()["id"],
           "sleep": submit(stack, "dash-sleep").json()["id"],
           "manual": submit(stack, "dash-review", {"doc": "x.pdf"}).json()["id"]}
    for key in ("ok1", "ok2", "bad"):
        wait_status(stack, ids[key], timeout=60)
    wait_status(stack, ids["sleep"], {"RUNNING"}, timeout=60)
    wait_status(stack, ids["manual"], {"ASSIGNED"}, timeout=30)
    yield ids
    requests.post(f"{stack.url}/api/v1/tasks/{ids['sleep']}/cancel", json={"reason": "test over"}, headers=ADMIN,
                  timeout=10)


def text(page: Any, selector: str) -> str:
    return str(page.inner_text(selector)).strip()


def test_dashboard_renders_live_data_and_the_task_page(stack: Stack, busy_stack: dict[str, str],
                                                       browser_page: Any, tmp_path: Path) -> None:
    ids, page = busy_stack, browser_page
    page.goto(f"{stack.url}/dashboard")
    page.fill("#token", make_token("olga", ("monitor",)))
    page.click("#signin")
    page.wait_for_selector(f"#failures-table tbody tr[data-task-id='{ids['bad']}']", timeout=15000)

    assert text(page, "#kpi-submitted .value") == "5"
    assert text(page, "#kpi-completed .value") == "2"
    assert text(page, "#kpi-failed .value") == "1"
    assert text(page, "#kpi-running .value") == "1"
    assert text(page, "#kpi-assigned .value") == "1"
    assert text(page, "#kpi-ratio .value") == "33%"
    failure = text(page, f"#failures-table tr[data-task-id='{ids['bad']}']")
    assert "NON_ZERO_EXIT" in failure and "dash-fail" in failure
    running = text(page, f"#running-table tr[data-task-id='{ids['sleep']}']")
    assert "dash-sleep" in running and running.endswith("s")
    assert "dash-review" in text(page, f"#manual-table tr[data-task-id='{ids['manual']}']")
    automated = page.locator("#pools-table tr[data-pool='automated'] td").all_inner_texts()
    assert automated[4:7] == ["1", "1", "2"], automated  # running, workers online, capacity
    assert page.locator("#chart-status rect.bar").count() >= 3
    assert page.locator("#chart-type polyline[data-type='AUTOMATED']").count() == 1
    assert page.locator("#error-codes [data-code='NON_ZERO_EXIT']").count() == 1
    assert page.locator("#f-definition option[value='dash-sleep']").count() == 1
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    # filter by definition: only that definition's tasks are counted
    page.select_option("#f-definition", "dash-ok")
    wait_for(lambda: text(page, "#kpi-submitted .value") == "2", 10, what="filtered counts")
    assert page.is_visible("[data-empty-for='failures-table']")
    page.select_option("#f-definition", "")

    # the task page: input, error, logs and the event history
    page.click(f"#failures-table tr[data-task-id='{ids['bad']}'] a")
    page.wait_for_selector("#t-status.FAILED")
    assert "report.csv" in text(page, "#t-input")
    assert "NON_ZERO_EXIT" in text(page, "#t-error")
    assert "disk full" in text(page, "#t-stderr")
    events = page.locator("#events-table tbody tr").all_inner_texts()
    assert any("task.instance.created" in e for e in events) and any("task.instance.failed" in e for e in events)
    page.screenshot(path=str(tmp_path / "task.png"), full_page=True)
    for shot in ("dashboard.png", "task.png"):
        assert (tmp_path / shot).stat().st_size > 20_000, f"{shot} looks blank"
    print(f"screenshots: {tmp_path}")
