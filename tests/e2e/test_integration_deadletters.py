"""Spent retries land in the dead-letter list; an admin re-drives them (once)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import auth
from tests.e2e.helpers import ADMIN, wait_status
from tests.http_target import Reply, Target, json_reply
from tests.integration_support import events, http_def, run, start_pool
from tests.support import Stack

SUBMITTER = auth("sam", "submitter")
OPERATOR = auth("olga", "operator")


@pytest.fixture
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


def _list(stack: Stack, headers: dict[str, str], **params: Any) -> requests.Response:
    return requests.get(f"{stack.url}/api/v1/deadletters", headers=headers, params=params, timeout=10)


def _redrive(stack: Stack, dl_id: str, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{stack.url}/api/v1/deadletters/{dl_id}/redrive", headers=headers, timeout=10)


def test_dead_letters_list_and_redrive(stack: Stack, target: Target) -> None:
    state = {"reply": Reply(503, {"error": "maintenance"})}
    url = target.on("/ledger", lambda _seen: state["reply"])
    start_pool(stack)
    definition = http_def("ledger", url, retry={"maxRetries": 1, "retryInterval": 10, "backoffMultiplier": 1.0})
    first, second = run(stack, definition), run(stack, definition)
    for task in (first, second):
        assert task["status"] == "FAILED" and task["retryCount"] == 1
        assert task["error"]["code"] == "MAX_RETRIES_EXCEEDED"
        assert task["error"]["details"]["lastError"]["code"] == "SERVICE_UNAVAILABLE"

    page = _list(stack, ADMIN, limit=1)
    assert page.status_code == 200, page.text
    assert page.json()["pagination"] == {"page": 1, "limit": 1, "totalItems": 2, "totalPages": 2}
    everything = _list(stack, ADMIN).json()["items"]
    item = next(i for i in everything if i["taskId"] == first["id"])
    assert item["error"]["code"] == "MAX_RETRIES_EXCEEDED" and item["redrivenAt"] is None
    assert item["taskDefinitionId"] == "ledger" and item["queue"] == stack.env["TEL_QUEUE_INTEGRATION_NAME"]
    assert _list(stack, SUBMITTER).status_code == 200
    assert _list(stack, OPERATOR).status_code == 403
    assert requests.get(f"{stack.url}/api/v1/deadletters", timeout=10).status_code == 401

    assert _redrive(stack, item["id"], SUBMITTER).status_code == 403
    assert _redrive(stack, "no-such-id", ADMIN).status_code == 404

    state["reply"] = json_reply({"booked": True})
    r = _redrive(stack, item["id"], ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["taskId"] == first["id"] and r.json()["status"] == "PENDING"
    done = wait_status(stack, first["id"], timeout=30)
    assert done["status"] == "COMPLETED" and done["retryCount"] == 0 and done["output"] == {"booked": True}
    redrive_events = [e for e in events(stack, first["id"]) if (e["details"] or {}).get("redrive") == item["id"]]
    assert redrive_events and redrive_events[0]["type"] == "task.instance.retry"
    assert redrive_events[0]["actor"] == "admin"

    again = _redrive(stack, item["id"], ADMIN)
    assert again.status_code == 409 and again.json()["error"]["code"] == "CONFLICT"

    resolved = _list(stack, ADMIN, resolved="true").json()["items"]
    assert [(i["id"], i["redrivenBy"], i["taskStatus"]) for i in resolved] == [(item["id"], "admin", "COMPLETED")]
    still_open = _list(stack, ADMIN, resolved="false").json()["items"]
    assert [i["taskId"] for i in still_open] == [second["id"]]
