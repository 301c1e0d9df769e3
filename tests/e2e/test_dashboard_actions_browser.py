"""The dashboard's task list, task page actions and dead letters in a real headless Chromium.

A real router process; attempts are reported through the internal API as a pool would (no worker needed), so
tasks sit PENDING, FAILED or dead-lettered. An admin signs in with an API key, filters and pages the list,
cancels, retries and re-drives through the confirmation dialog; the changes are checked through the API and
the database. A monitor sees no buttons, a submitter no re-drive. Screenshots: tests/artifacts/<test>/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskexec.clients.sdk import TaskexecClient
from taskexec.store.auth import create_api_key
from taskexec.store.db import Database
from tests.api_helpers import GREET, sql
from tests.conftest import make_token
from tests.e2e.helpers import finish_via_internal_api
from tests.support import Stack, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def seeded(stack: Stack, database: str) -> Iterator[dict[str, Any]]:
    """12 pending tasks (correlation ids batch-0..11), one FAILED, one dead letter, one created 3 days ago."""
    tel = TaskexecClient(stack.url, make_token("admin", ("admin",)))
    tel.apply_definition(GREET)
    tel.apply_definition({**GREET, "id": "greet-once", "retryPolicy": {"maxRetries": 0}})
    pending = [tel.submit("greet", {"name": f"n{i}"}, correlation_id=f"batch-{i}").id for i in range(12)]
    failed = tel.submit("greet", {"name": "f"}).id
    finish_via_internal_api(stack, failed, retry=False, stderr="disk full\n")
    dead = tel.submit("greet-once", {"name": "d"}).id
    finish_via_internal_api(stack, dead)
    old = tel.submit("greet", {"name": "old"}).id
    sql(database, "UPDATE task_instances SET created_at = now() - interval '3 days' WHERE id = %s", old)
    db = Database(stack.env["DATABASE_URL"])
    with db.session() as s:
        _, key = create_api_key(s, "ops-console", ["admin"])
    db.dispose()
    yield {"tel": tel, "pending": pending, "failed": failed, "dead": dead, "old": old, "key": key}
    tel.close()


def sign_in(page: Any, stack: Stack, credential: str) -> None:
    page.goto(f"{stack.url}/dashboard")
    page.fill("#token", credential)
    page.click("#signin")
    page.wait_for_selector("#nav:visible")


def rows(page: Any) -> list[str]:
    return list(page.eval_on_selector_all("#tasks-table tbody tr", "rs => rs.map(r => r.dataset.taskId)"))


def wait_rows(page: Any, count: int) -> list[str]:
    """The list's task ids once it shows `count` rows (0: the empty-list message)."""
    def check() -> list[str] | str | None:
        found = rows(page)
        if count == 0:
            return "empty" if not found and page.is_visible("[data-empty-for='tasks-table']") else None
        return found if len(found) == count else None

    got = wait_for(check, 15, what=f"{count} rows")
    return got if isinstance(got, list) else []


def wait_ids(page: Any, ids: list[str]) -> None:
    """Wait until the list shows exactly these tasks (in any order)."""
    wait_for(lambda: sorted(rows(page)) == sorted(ids), 15, what=f"rows {ids}")


def confirm(page: Any, reason: str | None = None) -> None:
    page.wait_for_selector("#confirm:visible")
    if reason is not None:
        page.fill("#confirm-reason", reason)
    page.click("#confirm-ok")


def test_admin_filters_pages_and_acts(stack: Stack, seeded: dict[str, Any], browser_page: Any,
                                      artifacts: Path) -> None:
    page, tel = browser_page, seeded["tel"]
    sign_in(page, stack, seeded["key"])  # an API key, not a JWT
    assert page.inner_text("#who-name") == "apikey:ops-console"
    page.click("#nav a[data-view='tasks']")
    page.select_option("#l-limit", "10")
    assert len(wait_rows(page, 10)) == 10
    assert "page 1 of 2 · 15 tasks" in page.inner_text("#l-info")
    page.click("#l-next")
    wait_for(lambda: "page 2 of 2" in page.inner_text("#l-info"), 10, what="page 2")
    assert seeded["old"] in wait_rows(page, 5)  # oldest last
    page.screenshot(path=str(artifacts / "tasks-page2.png"), full_page=True)

    page.select_option("#l-window", "24h")
    assert seeded["old"] not in wait_rows(page, 10)
    page.select_option("#l-window", "future")
    wait_rows(page, 0)
    page.select_option("#l-window", "")
    page.select_option("#l-status", "FAILED")
    wait_ids(page, [seeded["failed"], seeded["dead"]])
    page.select_option("#l-definition", "greet-once")
    wait_ids(page, [seeded["dead"]])
    page.select_option("#l-definition", "")
    page.select_option("#l-status", "")
    page.fill("#l-search", "batch-7")
    wait_ids(page, [seeded["pending"][7]])
    page.fill("#l-search", seeded["failed"][:8])
    wait_ids(page, [seeded["failed"]])
    page.fill("#l-search", "")
    wait_rows(page, 10)

    # live: a change made elsewhere shows up without reloading
    page.select_option("#l-limit", "20")
    wait_rows(page, 15)
    tel.cancel(seeded["pending"][0], "elsewhere")
    page.wait_for_selector(f"#tasks-table tr[data-task-id='{seeded['pending'][0]}'][data-status='CANCELLED']",
                           timeout=20000)

    # cancel, after changing one's mind once
    target = seeded["pending"][1]
    page.click(f"#tasks-table tr[data-task-id='{target}'] a")
    page.wait_for_selector("#btn-cancel:visible")
    assert page.is_hidden("#btn-retry") and page.is_hidden("#btn-redrive")
    page.click("#btn-cancel")
    page.click("#confirm-no")
    assert page.is_hidden("#confirm") and tel.get(target).status == "PENDING"
    page.click("#btn-cancel")
    page.screenshot(path=str(artifacts / "confirm-cancel.png"), full_page=True)
    confirm(page, "duplicate order")
    page.wait_for_selector("#t-status.CANCELLED")
    assert tel.get(target).error.message == "duplicate order"  # type: ignore[union-attr]
    assert sql(stack_db(stack), "SELECT status FROM task_instances WHERE id = %s", target)[0][0] == "CANCELLED"
    assert page.is_hidden("#btn-cancel")

    # retry a FAILED task: its page shows stderr and the error first
    page.goto(f"{stack.url}/dashboard#/task/{seeded['failed']}")
    page.wait_for_selector("#btn-retry:visible")
    assert "disk full" in page.inner_text("#t-stderr") and "NON_ZERO_EXIT" in page.inner_text("#t-error")
    assert page.is_hidden("#btn-redrive")  # FAILED without retry: no dead letter
    page.screenshot(path=str(artifacts / "task-failed.png"), full_page=True)
    page.click("#btn-retry")
    confirm(page)
    page.wait_for_selector("#t-status.PENDING")
    assert tel.get(seeded["failed"]).retry_count == 1

    # re-drive from the dead letters page
    page.click("#nav a[data-view='deadletters']")
    button = "#dl-table button[data-dead-letter-id]"
    page.wait_for_selector(button)
    page.screenshot(path=str(artifacts / "deadletters.png"), full_page=True)
    page.click(button)
    confirm(page)
    page.wait_for_selector("[data-empty-for='dl-table']:visible")
    assert tel.get(seeded["dead"]).status == "PENDING"
    assert tel.dead_letters(resolved=True, task_id=seeded["dead"]).pagination.total_items == 1
    for shot in artifacts.glob("*.png"):
        assert shot.stat().st_size > 15_000, f"{shot.name} looks blank"


def test_buttons_follow_the_role(stack: Stack, seeded: dict[str, Any], browser_page: Any, artifacts: Path) -> None:
    page, tel = browser_page, seeded["tel"]
    # the dead letter's task offers a re-drive to an admin only
    sign_in(page, stack, make_token("root", ("admin",)))
    page.goto(f"{stack.url}/dashboard#/task/{seeded['dead']}")
    page.wait_for_selector("#btn-redrive:visible")
    assert page.is_visible("#btn-retry")
    page.click("#signout")

    sign_in(page, stack, make_token("olga", ("monitor",)))
    page.goto(f"{stack.url}/dashboard#/task/{seeded['pending'][2]}")
    page.wait_for_selector("#t-status.PENDING")
    assert page.is_hidden("#btn-cancel") and page.is_hidden("#btn-retry") and page.is_hidden("#btn-redrive")
    page.screenshot(path=str(artifacts / "monitor-task.png"), full_page=True)
    page.click("#signout")

    sign_in(page, stack, make_token("sam", ("submitter",)))  # no tasks:monitor: starts on the task list
    page.wait_for_selector("#tasks-view:visible")
    page.goto(f"{stack.url}/dashboard#/task/{seeded['dead']}")
    page.wait_for_selector("#btn-retry:visible")
    assert page.is_hidden("#btn-redrive") and page.is_hidden("#btn-cancel")
    page.click("#btn-retry")
    confirm(page)
    page.wait_for_selector("#t-status.PENDING")
    assert tel.get(seeded["dead"]).status == "PENDING"


def stack_db(stack: Stack) -> str:
    return stack.env["DATABASE_URL"].rsplit("/", 1)[-1]
