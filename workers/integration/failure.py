"""`CallFailure`: how every step of an integration attempt reports a failed outcome."""

from __future__ import annotations

from typing import Any

from taskexec.core.constants import TaskErrorCode


class CallFailure(Exception):
    """A failed attempt: its task error code, a secret-free message, and whether to retry.

    `breaker` says whether it counts as a failure of the target host for the circuit breaker
    (connection errors, timeouts, 5xx); `retry_after_ms` is a floor on the retry delay.
    """

    def __init__(self, code: TaskErrorCode, message: str, *, retryable: bool = False, breaker: bool = False,
                 details: dict[str, Any] | None = None, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.breaker = breaker
        self.details = dict(details or {})
        if retry_after_ms is not None:
            self.details["retryAfterMs"] = int(retry_after_ms)

    @classmethod
    def bad_input(cls, reason: str, message: str, **details: Any) -> CallFailure:
        """A problem with the definition or the task input: never retried."""
        return cls(TaskErrorCode.INTEGRATION_ERROR, message, details={"reason": reason, **details})
