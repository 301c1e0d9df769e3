"""All of taskexec's exceptions, each carrying its API error code and HTTP status."""

from __future__ import annotations

from typing import Any

from taskexec.core.constants import ErrorCode


def error_envelope(code: ErrorCode | str, message: str, details: Any = None) -> dict[str, Any]:
    """The error envelope `{"error": {"code", "message", "details"}}` of every API error: the one builder
    (HTTP errors, rate limits, shedding, protocol errors before Flask, batch items, pool reports)."""
    return {"error": {"code": str(code), "message": message, "details": details}}


class TaskexecError(Exception):
    """Base class; `code`/`status` map once to the API error envelope."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    status: int = 500

    def __init__(self, message: str, details: Any = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if status is not None:
            self.status = status

    @property
    def field(self) -> str | None:
        """The first field the details name (`[{field, message}]` or `{field: ...}`), if any."""
        details = self.details
        if isinstance(details, dict) and isinstance(details.get("field"), str):
            return str(details["field"])
        if isinstance(details, list):
            for item in details:
                if isinstance(item, dict) and isinstance(item.get("field"), str):
                    return str(item["field"])
        return None

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.code, self.message, self.details)

    def error_body(self) -> dict[str, Any]:
        """The envelope's inner `error` object (a batch item's or a pool report's `error`)."""
        return dict(self.envelope()["error"])


class ValidationFailed(TaskexecError):
    """Request body or query malformed (400) or semantically invalid (422)."""

    code = ErrorCode.VALIDATION_ERROR
    status = 422


class BadRequest(ValidationFailed):
    status = 400


class Unauthorized(TaskexecError):
    code = ErrorCode.UNAUTHORIZED
    status = 401


class Forbidden(TaskexecError):
    code = ErrorCode.FORBIDDEN
    status = 403


class NotFound(TaskexecError):
    code = ErrorCode.NOT_FOUND
    status = 404


class Conflict(TaskexecError):
    code = ErrorCode.CONFLICT
    status = 409


class InvalidTransition(Conflict):
    """A status change the state machine does not allow."""


class StaleVersion(Conflict):
    """Another writer changed the row first (optimistic `version` check)."""


class RateLimited(TaskexecError):
    code = ErrorCode.RATE_LIMITED
    status = 429


class Unavailable(TaskexecError):
    code = ErrorCode.UNAVAILABLE
    status = 503


class PayloadTooLarge(ValidationFailed):
    status = 413


def field_error(field: str, message: str, status: int = 400) -> ValidationFailed:
    """A validation error naming one offending field."""
    return ValidationFailed(message, details=[{"field": field, "message": message}], status=status)


class DestinationNotAllowed(Exception):
    """A user-controlled URL resolves to an address user traffic may not reach (`taskexec.core.netpolicy`).

    Not an API error: the integration pool turns it into the task error DESTINATION_NOT_ALLOWED. The message
    names the host and the kind of address, not the address itself (which only the worker's log shows).
    """

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"{host} resolves to a refused address ({reason})")
        self.host = host
        self.address = address
        self.reason = reason


class WaitTimeout(TimeoutError):
    """`TaskexecClient.wait` gave up before the task reached a final status."""

    def __init__(self, task_id: str, status: str | None, waited_s: float) -> None:
        super().__init__(f"task {task_id} is still {status} after {waited_s:.0f}s")
        self.task_id = task_id
        self.status = status


_BY_CODE: dict[str, type[TaskexecError]] = {
    ErrorCode.VALIDATION_ERROR: ValidationFailed,
    ErrorCode.UNAUTHORIZED: Unauthorized,
    ErrorCode.FORBIDDEN: Forbidden,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.CONFLICT: Conflict,
    ErrorCode.RATE_LIMITED: RateLimited,
    ErrorCode.UNAVAILABLE: Unavailable,
}


def from_envelope(status: int, body: Any) -> TaskexecError:
    """The exception an error answer of the router stands for (the client raises it): same class as on the
    server for the envelope's `code`, with its message, details and the HTTP status."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return TaskexecError(f"HTTP {status} without an error envelope", status=status)
    cls = _BY_CODE.get(str(error.get("code")), TaskexecError)
    return cls(str(error.get("message") or f"HTTP {status}"), details=error.get("details"), status=status)
