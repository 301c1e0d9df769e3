"""The sandbox's error codes stay a subset of the task error codes (the sandbox must not import taskexec)."""

from __future__ import annotations

from sandbox import spec
from taskexec.core.constants import TaskErrorCode
from taskexec.core.exceptions import Conflict, error_envelope


def test_every_sandbox_error_code_is_a_task_error_code() -> None:
    assert {code.value for code in TaskErrorCode} >= spec.ERROR_CODES, spec.ERROR_CODES - set(TaskErrorCode)


def test_every_code_constant_of_the_sandbox_is_listed() -> None:
    # a code added to sandbox/spec.py but left out of ERROR_CODES would escape the check above
    constants = {value for name, value in vars(spec).items()
                 if name.isupper() and isinstance(value, str) and value.isupper()}
    assert constants == spec.ERROR_CODES


def test_the_error_envelope_has_one_shape() -> None:
    assert error_envelope("CONFLICT", "taken", {"assignee": "bob"}) == {
        "error": {"code": "CONFLICT", "message": "taken", "details": {"assignee": "bob"}}}
    exc = Conflict("taken", details={"assignee": "bob"})
    assert exc.envelope() == error_envelope("CONFLICT", "taken", {"assignee": "bob"})
    assert exc.error_body() == exc.envelope()["error"]
