"""One mapping from exceptions to the error envelope; no stack trace ever reaches a client."""

from __future__ import annotations

import json
import logging
import socket

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from taskexec.core.constants import ErrorCode
from taskexec.core.exceptions import TaskexecError, error_envelope

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: ErrorCode.VALIDATION_ERROR,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.VALIDATION_ERROR,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.VALIDATION_ERROR,
    415: ErrorCode.VALIDATION_ERROR,
    422: ErrorCode.VALIDATION_ERROR,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.UNAVAILABLE,
}


def error_response(status: int, code: str, message: str, details: object = None) -> tuple[Response, int]:
    return jsonify(error_envelope(code, message, details)), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(TaskexecError)
    def _ours(exc: TaskexecError) -> tuple[Response, int]:  # rate limits (429) and shedding (503) too
        return jsonify(exc.envelope()), exc.status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, ErrorCode.INTERNAL_ERROR)
        details = None
        if status == 413:
            details = [{"field": "body", "message": "request body too large"}]
        resp, status = error_response(status, str(code), exc.description or exc.name, details)
        for name, value in exc.get_headers():  # e.g. `Allow` on a 405 (RFC 9110 requires it)
            if name.lower() != "content-type":
                resp.headers[name] = value
        return resp, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error_response(500, str(ErrorCode.INTERNAL_ERROR), "internal error")


def write_protocol_error(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """Replaces gunicorn's HTML page for requests it refuses before Flask sees them (request line or headers too
    large or malformed): the same JSON error envelope as every other error."""
    code = _HTTP_CODES.get(status, ErrorCode.VALIDATION_ERROR if status < 500 else ErrorCode.INTERNAL_ERROR)
    body = json.dumps(error_envelope(code, message or reason)).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    from gunicorn.util import write_nonblock

    write_nonblock(sock, head + body)
