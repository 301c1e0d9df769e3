"""The web inbox in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Real router and MANUAL worker processes; a real HTTP `Receiver` stands in for the orchestrator.
A person signs in with a token, opens a task, claims it, gets 422 errors inline, fixes them, completes it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import make_token
from tests.e2e.helpers import define, get, submit, wait_status
from tests.manual_support import OUTPUT_SCHEMA, manual_def
from tests.support import Receiver, Stack, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FORM = {**OUTPUT_SCHEMA, "x-order": ["decision", "score", "approved", "comment"], "properties": {
    "approved": {"type": "boolean", "title": "I approve this document"},
    "score": {"type": "integer", "title": "Quality score", "description": "1 (poor) to 5 (excellent)",
              "minimum": 1, "maximum": 5},
    "decision": {"title": "Decision", "enum": ["accept", "reject", "defer"]},
    "comment": {"type": "string", "title": "Comment", "format": "textarea"},
}}


@pytest.fixture
def inbox_stack(stack: Stack) -> Stack:
    stack.start_worker("manual", concurrency=1)
    return stack


def test_claim_and_complete_through_the_web_inbox(inbox_stack: Stack, receiver: Receiver, browser_page: Any
                                                   ) -> None:
    define(inbox_stack, manual_def("doc-review", formSchema=FORM))
    task_id = submit(inbox_stack, "doc-review", {"doc": "contract.pdf", "pages": 12}, priority="HIGH").json()["id"]
    wait_status(inbox_stack, task_id, {"ASSIGNED"}, timeout=30)
    page = browser_page
    page.goto(f"{inbox_stack.url}/inbox")
    page.fill("#token", make_token("alice", ("operator", "reviewers")))
    page.click("#signin")
    page.wait_for_selector("#who-name:has-text('alice')")
    item = page.locator(f"li[data-task-id='{task_id}']")
    item.wait_for()
    assert "Review (doc-review)" in item.inner_text() and "HIGH" in item.inner_text()
    item.click()
    page.wait_for_selector("#d-name:has-text('Review (doc-review)')")
    assert "contract.pdf" in page.inner_text("#d-input")
    assert page.is_disabled("#f-score")  # not claimed yet: the form is locked
    page.click("#claim")
    page.wait_for_selector("#f-score:enabled")
    assert get(inbox_stack, task_id)["assignee"] == "alice"
    assert page.inner_text("label[for='f-score']").startswith("Quality score")
    assert page.is_hidden("#claim-box")
    names = page.eval_on_selector_all("#fields .field", "els => els.map(e => e.dataset.field)")
    assert names == ["decision", "score", "approved", "comment"]  # `x-order` survives JSONB
    # a wrong answer: 422, shown next to the field, the task stays open
    page.check("#f-approved")
    page.fill("#f-score", "9")
    page.select_option("#f-decision", label="accept")
    page.click("#submit")
    error = page.locator(".field-error[data-error-for='score']")
    wait_for(lambda: error.inner_text().strip(), 10, what="inline error for score")
    assert "5" in error.inner_text()
    assert get(inbox_stack, task_id)["status"] == "ASSIGNED"
    # fixed: completed
    page.fill("#f-score", "4")
    page.fill("#f-comment", "Looks fine")
    page.click("#submit")
    page.wait_for_selector("#message:has-text('Task completed')")
    task = wait_status(inbox_stack, task_id, timeout=10)
    assert task["status"] == "COMPLETED"
    assert task["output"] == {"approved": True, "score": 4, "decision": "accept", "comment": "Looks fine"}
    page.wait_for_selector("#empty", state="visible")
    wait_for(lambda: "task.instance.completed" in receiver.events_for(task_id), 15, what="completed event")
    history = get(inbox_stack, task_id, "/events")["items"]
    browser_events = [e for e in history if e["type"] in ("task.viewed", "task.claimed", "task.completion_rejected",
                                                          "task.instance.completed")]
    assert {e["type"] for e in browser_events} == {"task.viewed", "task.claimed", "task.completion_rejected",
                                                   "task.instance.completed"}
    assert all(e["actor"] == "alice" and "Chrome" in (e["userAgent"] or "") and e["ip"] for e in browser_events)
