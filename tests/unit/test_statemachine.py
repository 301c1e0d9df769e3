"""The state machine's table: which status changes are allowed, and that terminal statuses are final."""

from __future__ import annotations

import pytest

from taskexec.core.constants import TERMINAL_STATUSES, EventType, Status
from taskexec.store.statemachine import ALLOWED, can_transition, event_type_for

S = Status

ALLOWED_PAIRS = [
    (S.PENDING, S.RUNNING),
    (S.PENDING, S.ASSIGNED),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.FAILED),
    (S.PENDING, S.TIMED_OUT),
    (S.ASSIGNED, S.COMPLETED),
    (S.ASSIGNED, S.RUNNING),
    (S.ASSIGNED, S.CANCELLED),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.TIMED_OUT),
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.PENDING),
    (S.FAILED, S.PENDING),
    (S.TIMED_OUT, S.PENDING),
]
FORBIDDEN_PAIRS = [
    (S.PENDING, S.COMPLETED),
    (S.FAILED, S.RUNNING),
    (S.FAILED, S.COMPLETED),
    (S.TIMED_OUT, S.RUNNING),
    (S.CANCELLED, S.PENDING),
    (S.COMPLETED, S.PENDING),
    (S.COMPLETED, S.FAILED),
]


@pytest.mark.parametrize(("current", "target"), ALLOWED_PAIRS)
def test_allowed(current: Status, target: Status) -> None:
    assert can_transition(current, target)


@pytest.mark.parametrize(("current", "target"), FORBIDDEN_PAIRS)
def test_forbidden(current: Status, target: Status) -> None:
    assert not can_transition(current, target)


@pytest.mark.parametrize("final", [S.COMPLETED, S.CANCELLED])
def test_completed_and_cancelled_never_change(final: Status) -> None:
    assert all(not can_transition(final, target) for target in Status)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_terminal_statuses_only_leave_by_a_retry(terminal: Status) -> None:
    assert ALLOWED[terminal] <= {S.PENDING}
    assert terminal.is_terminal


def test_terminal_set_matches_contract() -> None:
    assert {S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMED_OUT} == TERMINAL_STATUSES
    assert not any(s.is_terminal for s in (S.PENDING, S.ASSIGNED, S.RUNNING))


def test_every_status_has_a_row() -> None:
    assert set(ALLOWED) == set(Status)


def test_strings_accepted() -> None:
    assert can_transition("PENDING", "RUNNING")
    with pytest.raises(ValueError):
        can_transition("PENDING", "DONE")


def test_event_types() -> None:
    assert event_type_for(S.PENDING, S.PENDING) is EventType.CREATED
    assert event_type_for(S.FAILED, S.PENDING) is EventType.RETRY
    assert event_type_for(S.RUNNING, S.PENDING) is EventType.RETRY
    assert event_type_for(S.PENDING, S.RUNNING) is EventType.STARTED
    assert event_type_for(S.RUNNING, S.COMPLETED) is EventType.COMPLETED
    assert event_type_for(S.RUNNING, S.TIMED_OUT) is EventType.TIMED_OUT
    assert event_type_for(S.PENDING, S.ASSIGNED) is EventType.MANUAL_ASSIGNED
