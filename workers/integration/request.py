"""From a job (definition + task) to the outbound request: templates, target, timeouts, Idempotency-Key."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from taskexec.contract.protocol import Job
from taskexec.core.config import Settings
from taskexec.core.constants import TaskErrorCode
from taskexec.observability import tracing
from workers.integration.failure import CallFailure
from workers.integration.http import Request, host_key
from workers.integration.secrets import SecretNotFound, SecretsDenied, SecretsUnavailable
from workers.templates import TemplateError, render

E = TaskErrorCode


@dataclass
class Call:
    """One prepared outbound call (before auth is applied)."""

    request: Request
    host: str
    timeout: tuple[float, float]
    kind: str  # http | integration-service


def idempotency_key(task_id: str, dispatch: str | int) -> str:
    """Stable for one dispatch of a task (a broker redelivery reuses it), new for every retry or re-drive."""
    digest = hashlib.sha256(f"{task_id}:{dispatch}".encode()).hexdigest()[:16]
    return f"tel-{task_id}-{digest}"


def timeouts(cfg: dict[str, Any], settings: Settings) -> tuple[float, float]:
    """(connect, read) seconds: `connectTimeoutMs` / `timeoutMs` of the definition, else the defaults (5 s / 30 s)."""
    connect = cfg.get("connectTimeoutMs") or settings.integration_connect_timeout_ms
    read = cfg.get("timeoutMs") or settings.integration_read_timeout_ms
    return float(connect) / 1000.0, float(read) / 1000.0


def guarded(func: Callable[[], Any], where: str) -> Any:
    """Run `func` (templating, applying auth) turning template and secret-store errors into task failures."""
    try:
        return func()
    except TemplateError as exc:
        raise CallFailure.bad_input(exc.reason, f"{where}: {exc}", field=exc.field) from None
    except SecretNotFound as exc:
        raise CallFailure.bad_input("UNKNOWN_SECRET", f"{where}: {exc}") from None
    except SecretsDenied as exc:
        raise CallFailure(E.AUTHENTICATION_ERROR, str(exc), details={"reason": "SECRETS_DENIED"}) from None
    except SecretsUnavailable as exc:
        raise CallFailure(E.CONNECTION_ERROR, str(exc), retryable=True,
                          details={"reason": "SECRETS_UNAVAILABLE"}) from None


def _fill(value: Any, inputs: Any, secret: Callable[[str], str], where: str) -> Any:
    return guarded(lambda: render(value, inputs, secret), where)


def prepare(job: Job, settings: Settings, secret: Callable[[str], str]) -> Call:
    """The request a job describes, with templates filled; raises CallFailure for bad input."""
    cfg = job.definition.execution_config
    task = job.task
    inputs = task.input
    key = idempotency_key(task.id, job.dispatch_token or job.attempt)
    headers = {"Idempotency-Key": key, "Accept": "application/json", "User-Agent": "taskexec-integration",
               **tracing.outgoing_headers()}  # the task's X-Request-Id and traceparent; a definition may override
    if cfg.get("integrationId"):
        base = (settings.integration_service_url or "").rstrip("/")
        if not base:
            raise CallFailure.bad_input("NOT_CONFIGURED", "INTEGRATION_SERVICE_URL is not configured")
        url = f"{base}/api/integrations/{quote(str(cfg['integrationId']), safe='')}/invoke"
        invoke = {"operation": cfg.get("operation"), "params": _fill(cfg.get("params") or {}, inputs, secret, "params"),
                  "taskId": task.id}
        req = Request("POST", url, headers=headers, json=invoke, guarded=False)  # the operator's own service
        kind = "integration-service"
    else:
        spec = cfg.get("request") or {}
        url = str(_fill(spec.get("url", ""), inputs, secret, "request.url"))
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise CallFailure.bad_input("BAD_URL", "request.url must be an http or https URL with a host, "
                                        f"got scheme {parts.scheme or 'none'!r}", field="request.url")
        extra = _fill(spec.get("headers") or {}, inputs, secret, "request.headers")
        headers.update({str(k): _as_header(v) for k, v in extra.items()})
        params = _fill(spec.get("query") or {}, inputs, secret, "request.query")
        body = _fill(spec["body"], inputs, secret, "request.body") if "body" in spec else None
        req = Request(str(spec.get("method", "GET")).upper(), url, headers=headers,
                      params={str(k): v for k, v in params.items()}, json=body)
        kind = "http"
    return Call(req, host_key(req.url), timeouts(cfg, settings), kind)


def _as_header(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)
