"""The INTEGRATION pool: a call to the Integration Service or a direct HTTP request, with retries."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from taskexec.config import get_settings
from taskexec.constants import Status, TaskErrorCode
from taskexec.constants import CELERY_TASK_EXECUTE, TaskType
from workers.base import ExecuteTask, Outcome
from workers.templates import TemplateError, map_response, render

E = TaskErrorCode
RETRYABLE_STATUS = {408: E.TIMEOUT_ERROR, 429: E.RATE_LIMIT_ERROR, 502: E.SERVICE_UNAVAILABLE,
                    503: E.SERVICE_UNAVAILABLE, 504: E.SERVICE_UNAVAILABLE}
DEFAULT_CONNECT_S, DEFAULT_READ_S = 5.0, 30.0


class SecretError(LookupError):
    pass


def read_secret(ref: str) -> str:
    """Just-in-time secret lookup: `file:///dir` (one file per secret) or a Vault KV v2 store."""
    settings = get_settings()
    url = settings.secrets_manager_url
    if not url:
        raise SecretError(f"secret {ref!r} requested but SECRETS_MANAGER_URL is not set")
    if url.startswith("file://"):
        path = Path(urlsplit(url).path) / ref
        if "/" in ref or not path.is_file():
            raise SecretError(f"unknown secret {ref!r}")
        return path.read_text().strip()
    import hvac

    client = hvac.Client(url=url, token=settings.secrets_token.get_secret_value() if settings.secrets_token else None)
    name, _, key = ref.partition("#")
    try:
        data = client.secrets.kv.v2.read_secret_version(path=name, raise_on_deleted_version=True)["data"]["data"]
    except Exception:
        raise SecretError(f"unknown secret {ref!r}") from None
    return str(data[key or "value"]) if (key or "value") in data else str(next(iter(data.values())))


def build_request(job: dict[str, Any]) -> dict[str, Any]:
    cfg = job["definition"]["executionConfig"]
    inputs = job["task"]["input"]
    settings = get_settings()
    if cfg.get("integrationId"):
        base = (settings.integration_service_url or "").rstrip("/")
        return {"method": "POST", "url": f"{base}/api/integrations/{cfg['integrationId']}/invoke",
                "json": {"operation": cfg.get("operation"), "params": render(cfg.get("params") or {}, inputs, read_secret),
                         "taskId": job["task"]["id"]}, "headers": {}, "params": {}}
    req = cfg.get("request") or {}
    url = render(req.get("url", ""), inputs, read_secret)
    if urlsplit(url).scheme not in ("http", "https"):
        raise TemplateError(f"request.url must be http or https, got {urlsplit(url).scheme or 'none'!r}")
    headers = render(req.get("headers") or {}, inputs, read_secret)
    auth = cfg.get("auth") or {}
    if auth.get("type") == "bearer":
        headers["Authorization"] = "Bearer " + read_secret(auth["secretRef"])
    elif auth.get("type") == "api_key":
        headers[auth.get("header", "X-API-Key")] = read_secret(auth["secretRef"])
    return {"method": req.get("method", "GET").upper(), "url": url, "headers": headers,
            "params": render(req.get("query") or {}, inputs, read_secret),
            "json": render(req.get("body"), inputs, read_secret) if "body" in req else None}


def masked(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"


class IntegrationTask(ExecuteTask):
    task_type = "INTEGRATION"
    name = CELERY_TASK_EXECUTE[TaskType.INTEGRATION]

    def execute(self, job: dict[str, Any]) -> Outcome:
        cfg = job["definition"]["executionConfig"]
        try:
            req = build_request(job)
        except (TemplateError, SecretError) as exc:
            return Outcome.failed(E.INTEGRATION_ERROR.value, str(exc))
        meta = {"endpoint": masked(req["url"]), "method": req["method"],
                "executionEnvironment": {"pool": "integration"}}
        key = hashlib.sha256(f"{job['task']['id']}:{job['attempt']}".encode()).hexdigest()[:32]
        timeout = (cfg.get("connectTimeoutMs", DEFAULT_CONNECT_S * 1000) / 1000,
                   cfg.get("timeoutMs", DEFAULT_READ_S * 1000) / 1000)
        try:
            resp = requests.request(req["method"], req["url"], headers={**req["headers"], "Idempotency-Key": key},
                                    params=req["params"], json=req["json"], timeout=timeout)
        except requests.Timeout:
            return Outcome.failed(E.TIMEOUT_ERROR.value, f"timed out calling {meta['endpoint']}", metadata=meta, retry=True)
        except requests.ConnectionError:
            return Outcome.failed(E.CONNECTION_ERROR.value, f"cannot connect to {meta['endpoint']}", metadata=meta,
                                  retry=True)
        meta["httpStatus"] = resp.status_code
        if resp.status_code in (401, 403):
            return Outcome.failed(E.AUTHENTICATION_ERROR.value, f"{meta['endpoint']} answered {resp.status_code}",
                                  metadata=meta)
        if resp.status_code in RETRYABLE_STATUS:
            return Outcome.failed(RETRYABLE_STATUS[resp.status_code].value,
                                  f"{meta['endpoint']} answered {resp.status_code}", metadata=meta, retry=True)
        if resp.status_code >= 400:
            return Outcome.failed(E.INTEGRATION_ERROR.value, f"{meta['endpoint']} answered {resp.status_code}",
                                  metadata=meta)
        try:
            body = resp.json() if resp.content else None
        except ValueError:
            if cfg.get("responseMapping"):
                return Outcome.failed(E.INTEGRATION_ERROR.value, "response is not JSON", metadata=meta)
            body = resp.text
        try:
            output = map_response(cfg.get("responseMapping"), body)
        except TemplateError as exc:
            return Outcome.failed(E.INTEGRATION_ERROR.value, str(exc), metadata=meta)
        return Outcome(Status.COMPLETED.value, output=output, metadata=meta)
