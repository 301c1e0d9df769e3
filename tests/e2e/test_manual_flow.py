"""Manual tasks end to end: real router (gunicorn), real MANUAL worker and `taskexec beat` processes.

Two real HTTP `Receiver`s stand in for third parties we cannot run here: one for the workflow
orchestrator (`/api/v1/task-events`), one for the notification service (`/api/v1/notifications`).
Deadlines are real and short (seconds); nothing in the code under test is faked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.helpers import define, get, submit, wait_status
from tests.manual_support import GOOD_OUTPUT, manual_def, operator
from tests.support import Proc, Receiver, Stack, taskexec, wait_for

pytestmark = [pytest.mark.slow]


@pytest.fixture
def manual_stack(env: dict[str, str], receiver: Receiver, notifier: Receiver, tmp_path: Path,
                 request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = Stack({**env, "WORKFLOW_ORCHESTRATOR_URL": receiver.url, "NOTIFICATION_SERVICE_URL": notifier.url,
               "TEL_MANUAL_SWEEP_INTERVAL": "0.5", "TEL_STATE_DIR": str(tmp_path)}, tmp_path)
    s.start_router()
    s.start_worker("manual", concurrency=2)
    yield s
    s.stop()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for name, proc in s.procs.items():
            print(f"----- {name} log (tail)\n{proc.text()[-3000:]}")


def start_beat(stack: Stack, tmp_path: Path) -> Proc:
    beat = Proc(taskexec("beat"), stack.worker_env(), tmp_path / "beat.log")
    stack.procs["beat"] = beat
    return beat


def notes(notifier: Receiver, task_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [n for n in notifier.received if n.get("taskId") == task_id and (kind is None or n["type"] == kind)]


def assigned(stack: Stack, def_id: str, **body: Any) -> str:
    r = submit(stack, def_id, {"doc": "contract.pdf"}, **body)
    assert r.status_code == 201, r.text
    wait_status(stack, r.json()["id"], {"ASSIGNED"}, timeout=30)
    return r.json()["id"]  # type: ignore[no-any-return]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def post(stack: Stack, path: str, headers: dict[str, str], body: Any = None) -> requests.Response:
    return requests.post(f"{stack.url}/api/v1{path}", json=body, headers=headers, timeout=15)


def inbox(stack: Stack, headers: dict[str, str]) -> list[str]:
    r = requests.get(f"{stack.url}/api/v1/inbox", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return [t["id"] for t in r.json()["items"]]


def test_offer_claim_race_validate_and_complete(manual_stack: Stack, receiver: Receiver, notifier: Receiver) -> None:
    define(manual_stack, manual_def())
    alice, bob = operator("alice", "reviewers"), operator("bob", "reviewers")
    ids = [assigned(manual_stack, "review", workflowInstanceId=f"wf-{i}") for i in range(3)]
    assert sorted(inbox(manual_stack, alice)) == sorted(ids) == sorted(inbox(manual_stack, bob))
    for task_id in ids:  # two people claim at the same moment: exactly one wins
        barrier = threading.Barrier(2)
        codes: dict[str, int] = {}

        def claim(name: str, headers: dict[str, str], task_id: str = task_id, barrier: threading.Barrier = barrier,
                  codes: dict[str, int] = codes) -> None:
            barrier.wait()
            codes[name] = post(manual_stack, f"/tasks/{task_id}/claim", headers).status_code

        threads = [threading.Thread(target=claim, args=(n, h)) for n, h in (("alice", alice), ("bob", bob))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes.values()) == [200, 409], codes
    task_id = ids[0]
    owner = get(manual_stack, task_id)["assignee"]
    headers = alice if owner == "alice" else bob
    r = post(manual_stack, f"/tasks/{task_id}/complete", headers, {"output": {"approved": "yes", "score": 7}})
    assert r.status_code == 422
    assert {d["field"] for d in r.json()["error"]["details"]} == {"output.approved", "output.score"}
    assert get(manual_stack, task_id)["status"] == "ASSIGNED"
    r = post(manual_stack, f"/tasks/{task_id}/complete", headers, {"output": GOOD_OUTPUT})
    assert r.status_code == 200, r.text
    wait_for(lambda: "task.instance.completed" in receiver.events_for(task_id), 15, what="completed event")
    assert receiver.events_for(task_id) == ["task.instance.created", "task.manual.assigned", "task.manual.assigned",
                                            "task.instance.completed"]
    done = [e for e in receiver.received if e["type"] == "task.instance.completed"][0]
    assert done["data"]["output"] == GOOD_OUTPUT and done["data"]["workflowInstanceId"] == "wf-0"
    wait_for(lambda: notes(notifier, task_id, "COMPLETION"), 15, what="COMPLETION notification")
    first = notes(notifier, task_id)[0]
    assert first["type"] == "ASSIGNMENT" and first["recipients"] == ["role:reviewers"]
    assert set(first) == {"type", "recipients", "taskId", "taskName", "priority", "dueDate"}
    history = [e["type"] for e in get(manual_stack, task_id, "/events")["items"]]
    for kind in ("task.claimed", "task.completion_rejected", "task.instance.completed"):
        assert kind in history


def test_reminders_then_escalation_notifies_manager(manual_stack: Stack, notifier: Receiver, tmp_path: Path
                                                    ) -> None:
    define(manual_stack, manual_def("remind", assignment={"user": "alice"}, deadlineSeconds=6,
                                    reminderThresholds=[0.25, 0.6],
                                    escalation={"action": "NOTIFY_MANAGER", "to": "manager-mo"}))
    define(manual_stack, manual_def("quick", assignment={"user": "alice"}, deadlineSeconds=3,
                                    reminderThresholds=[0.5]))
    start_beat(manual_stack, tmp_path)
    task_id = assigned(manual_stack, "remind", priority="HIGH")
    done_id = assigned(manual_stack, "quick")
    assert post(manual_stack, f"/tasks/{done_id}/complete", operator("alice"), {"output": GOOD_OUTPUT}).ok
    due = get(manual_stack, task_id)["dueDate"]
    wait_for(lambda: notes(notifier, task_id, "ESCALATION"), 30, what="escalation")
    kinds = [(n["type"], n["recipients"]) for n in notes(notifier, task_id)]
    assert kinds == [("ASSIGNMENT", ["alice"]), ("REMINDER", ["alice"]), ("REMINDER", ["alice"]),
                     ("ESCALATION", ["manager-mo"])]
    assert all(n["priority"] == "HIGH" and at(n["dueDate"]) == at(due) for n in notes(notifier, task_id))
    task = get(manual_stack, task_id)
    assert task["status"] == "ASSIGNED" and task["assignee"] == "alice"  # still open, still alice's
    history = get(manual_stack, task_id, "/events")["items"]
    reminders = [e for e in history if e["type"] == "task.reminder_sent"]
    assert [e["details"]["thresholds"] for e in reminders] == [[0.25], [0.6]]
    escalated = [e for e in history if e["type"] == "task.escalated"]
    assert len(escalated) == 1 and escalated[0]["details"]["action"] == "NOTIFY_MANAGER"
    assert at(escalated[0]["createdAt"]) >= at(due)
    time.sleep(2)  # escalation happens once, and nothing is sent about the task completed in time
    assert len(notes(notifier, task_id, "ESCALATION")) == 1
    assert [n["type"] for n in notes(notifier, done_id)] == ["ASSIGNMENT", "COMPLETION"]


def test_escalation_reassigns(manual_stack: Stack, receiver: Receiver, notifier: Receiver, tmp_path: Path) -> None:
    define(manual_stack, manual_def("reassign", deadlineSeconds=2, reminderThresholds=[],
                                    escalation={"action": "REASSIGN", "to": "${input.backup}"}))
    start_beat(manual_stack, tmp_path)
    r = submit(manual_stack, "reassign", {"backup": "boss"})
    task_id = r.json()["id"]
    wait_for(lambda: get(manual_stack, task_id)["assignee"] == "boss", 30, what="reassigned to boss")
    task = get(manual_stack, task_id)
    assert task["status"] == "ASSIGNED"
    assert inbox(manual_stack, operator("boss")) == [task_id]
    wait_for(lambda: notes(notifier, task_id, "REASSIGNMENT"), 15, what="REASSIGNMENT notification")
    assert notes(notifier, task_id, "ESCALATION")[0]["recipients"] == ["role:reviewers", "boss"]
    assert notes(notifier, task_id, "REASSIGNMENT")[0]["recipients"] == ["boss"]
    wait_for(lambda: receiver.events_for(task_id).count("task.manual.assigned") == 2, 15, what="assigned twice")
    assert post(manual_stack, f"/tasks/{task_id}/complete", operator("boss"), {"output": GOOD_OUTPUT}).ok


def test_escalation_auto_completes(manual_stack: Stack, receiver: Receiver, notifier: Receiver, tmp_path: Path
                                   ) -> None:
    fallback = {"approved": False, "score": 1, "comment": "auto-rejected after the deadline"}
    define(manual_stack, manual_def("auto", deadlineSeconds=2, reminderThresholds=[],
                                    escalation={"action": "AUTO_COMPLETE", "output": fallback}))
    start_beat(manual_stack, tmp_path)
    task_id = submit(manual_stack, "auto").json()["id"]
    task = wait_status(manual_stack, task_id, timeout=30)
    assert task["status"] == "COMPLETED" and task["output"] == fallback
    wait_for(lambda: "task.instance.completed" in receiver.events_for(task_id), 15, what="completed event")
    wait_for(lambda: notes(notifier, task_id, "COMPLETION"), 15, what="COMPLETION notification")
    assert [n["type"] for n in notes(notifier, task_id)] == ["ASSIGNMENT", "ESCALATION", "COMPLETION"]
    history = get(manual_stack, task_id, "/events")["items"]
    assert [e["actor"] for e in history if e["toStatus"] == "COMPLETED"] == ["system:escalation"]


def test_timers_survive_restarts_and_notifications_wait_for_the_service(
        manual_stack: Stack, notifier: Receiver, tmp_path: Path) -> None:
    """No beat while the deadline passes, the router restarts, the notification service is down: nothing lost."""
    define(manual_stack, manual_def("durable", deadlineSeconds=2, reminderThresholds=[0.5],
                                    escalation={"action": "NOTIFY_MANAGER"}))
    notifier.healthy = False
    task_id = assigned(manual_stack, "durable")
    started = time.monotonic()
    assert post(manual_stack, f"/tasks/{task_id}/claim", operator("alice", "reviewers")).status_code == 200
    assert time.monotonic() - started < 2  # the API never waits for the notification service
    manual_stack.procs["router"].stop()
    time.sleep(3)  # the deadline passes while nothing runs
    manual_stack.start_router()
    start_beat(manual_stack, tmp_path)
    history = lambda: [e["type"] for e in get(manual_stack, task_id, "/events")["items"]]  # noqa: E731
    wait_for(lambda: "task.escalated" in history(), 30, what="escalation after restart")
    assert "task.reminder_sent" not in history()  # an overdue task escalates; stale reminders are not sent
    assert notes(notifier, task_id) == []
    notifier.healthy = True
    wait_for(lambda: notes(notifier, task_id, "ESCALATION"), 30, what="delivery once the service is back")
    assert [n["type"] for n in notes(notifier, task_id)] == ["ASSIGNMENT", "ESCALATION"]
    assert notes(notifier, task_id, "ESCALATION")[0]["recipients"] == ["role:manager"]
