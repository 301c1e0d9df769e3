"""The worker pools' client for the router's internal API (they hold no database credentials)."""

from __future__ import annotations

import logging
import time
from typing import Any

import requests

from taskexec.config import Settings
from taskexec.constants import INTERNAL_PREFIX
from taskexec.exceptions import Conflict, NotFound, TaskexecError, Unavailable

log = logging.getLogger(__name__)


class RouterClient:
    """Calls `/internal/v1/...` with the service credential, retrying while the router is unreachable."""

    def __init__(self, settings: Settings, retry_for_s: float = 120.0) -> None:
        self.base = settings.task_router_url.rstrip("/") + INTERNAL_PREFIX
        self.retry_for_s = retry_for_s
        self.http = requests.Session()
        # Proxy and CA settings from the environment, read once rather than on every call (requests
        # scans the whole environment per request otherwise).
        env = self.http.merge_environment_settings(self.base, {}, None, None, None)
        self.http.proxies, self.http.verify = env["proxies"], env["verify"]
        self.http.trust_env = False
        token = settings.service_token.get_secret_value() if settings.service_token else ""
        if token.count(".") == 2:
            self.http.headers["Authorization"] = f"Bearer {token}"
        elif token:
            self.http.headers["X-API-Key"] = token

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.2
        while True:
            try:
                resp = self.http.request(method, self.base + path, json=body, timeout=(3.05, 30))
            except requests.RequestException as exc:
                if time.monotonic() > deadline:
                    raise Unavailable(f"router unreachable: {type(exc).__name__}") from None
                log.warning("router unreachable; retrying", extra={"path": path, "error": type(exc).__name__})
            else:
                if resp.status_code < 300:
                    return resp.json()
                if resp.status_code == 404:
                    raise NotFound(_message(resp))
                if resp.status_code == 409:
                    raise Conflict(_message(resp))
                if resp.status_code < 500 and resp.status_code != 429:
                    raise TaskexecError(_message(resp), status=resp.status_code)
                if time.monotonic() > deadline:
                    raise Unavailable(f"router answered {resp.status_code}")
                log.warning("router answered %s; retrying", resp.status_code,
                            extra={"path": path, "status": resp.status_code})
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def start(self, task_id: str, dispatch_token: str, worker_id: str, start_id: str | None = None) -> dict[str, Any]:
        body = {"dispatchToken": dispatch_token, "workerId": worker_id}
        if start_id:
            body["startId"] = start_id  # the same on every retry of this call: a lost answer is not a new attempt
        return self._call("POST", f"/tasks/{task_id}/start", body)

    def finish(self, task_id: str, result: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/tasks/{task_id}/finish", result)

    def status(self, task_id: str) -> str:
        return str(self._call("GET", f"/tasks/{task_id}/status")["status"])

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._call("POST", path, body or {})


def _message(resp: requests.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except Exception:
        return f"HTTP {resp.status_code}"
