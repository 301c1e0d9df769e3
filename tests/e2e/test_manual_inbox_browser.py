"""The web inbox in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Real router and MANUAL worker processes; a real HTTP `Receiver` stands in for the orchestrator.
A person signs in with a token, opens a task, claims it, gets 422 errors inline, fixes them, completes it.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
import requests

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


FORMAT_FORM = {**OUTPUT_SCHEMA, "required": ["approved", "score", "contact"], "properties": {
    **cast(dict[str, Any], OUTPUT_SCHEMA["properties"]),
    "contact": {"type": "string", "format": "email", "title": "Contact"},
    "when": {"type": "string", "format": "date-time", "title": "Follow-up at"},
}}
# (format, value) pairs the form's own check and the server's format checker must judge alike
SAMPLES = [("email", "a@b"), ("email", "nobody"), ("date", "2024-02-29"), ("date", "2023-02-29"),
           ("date", "2024-1-1"), ("date-time", "2024-05-01T09:30:00Z"), ("date-time", "2024-05-01t09:30:00.5+02:00"),
           ("date-time", "2024-05-01T09:30:00"), ("date-time", "2024-05-01 09:30:00Z"), ("time", "23:59:59Z"),
           ("time", "24:00:00Z"), ("time", "09:30"), ("uri", "https://example.com/a?b=c"), ("uri", "mailto:x@y"),
           ("uri", "no scheme"), ("uri", "/relative/path"), ("uuid", "9f1c6a3e-2b1d-4c8e-9a57-0c1d2e3f4a5b"),
           ("uuid", "9f1c6a3e2b1d4c8e9a570c1d2e3f4a5b"), ("ipv4", "192.0.2.7"), ("ipv4", "192.0.2.256"),
           ("ipv4", "01.2.3.4")]


def test_the_form_checks_formats_with_the_servers_words(inbox_stack: Stack, browser_page: Any) -> None:
    from taskexec.contract.validation import FORMAT_CHECKER, format_message
    from tests.conftest import auth

    define(inbox_stack, manual_def("fmt-review", formSchema=FORMAT_FORM))
    task_id = submit(inbox_stack, "fmt-review", {"doc": "x.pdf"}).json()["id"]
    wait_status(inbox_stack, task_id, {"ASSIGNED"}, timeout=60)
    page = browser_page
    page.goto(f"{inbox_stack.url}/inbox")
    page.fill("#token", make_token("alice", ("operator", "reviewers")))
    page.click("#signin")
    page.locator(f"li[data-task-id='{task_id}']").click()
    page.click("#claim")
    page.wait_for_selector("#f-contact:enabled")
    assert page.get_attribute("#f-contact", "type") == "email"

    judged = page.evaluate("samples => samples.map(([f, v]) => window.TaskexecFormats.check(f, v))", SAMPLES)
    expected = [None if FORMAT_CHECKER.conforms(v, f) else format_message(f) for f, v in SAMPLES]
    assert judged == expected, list(zip(SAMPLES, judged, expected, strict=True))

    page.check("#f-approved")
    page.fill("#f-score", "4")
    page.fill("#f-contact", "alice-at-example")
    page.fill("#f-when", "tomorrow morning")
    page.click("#submit")
    contact = page.locator(".field-error[data-error-for='contact']")
    wait_for(lambda: contact.inner_text().strip(), 10, what="inline format error")
    shown = {"contact": contact.inner_text().strip(),
             "when": page.inner_text(".field-error[data-error-for='when']").strip()}
    # the server says the same about the same values
    r = requests.post(f"{inbox_stack.url}/api/v1/tasks/{task_id}/complete", headers=auth("admin", "admin"),
                      json={"output": {"approved": True, "score": 4, "contact": "alice-at-example",
                                       "when": "tomorrow morning"}}, timeout=10)
    assert r.status_code == 422, r.text
    server = {d["field"].removeprefix("output."): d["message"] for d in r.json()["error"]["details"]}
    assert shown == server == {"contact": "must be an email address", "when": format_message("date-time")}
    history = get(inbox_stack, task_id, "/events")["items"]
    assert not [e for e in history if e["type"] == "task.completion_rejected" and e["actor"] == "alice"]

    page.fill("#f-contact", "alice@example.com")
    page.fill("#f-when", "2024-05-01T09:30:00Z")
    page.click("#submit")
    page.wait_for_selector("#message:has-text('Task completed')")
    done = wait_status(inbox_stack, task_id, timeout=10)
    assert done["output"] == {"approved": True, "score": 4, "contact": "alice@example.com",
                              "when": "2024-05-01T09:30:00Z"}
