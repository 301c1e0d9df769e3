"""One attempt of an INTEGRATION task: prepare, wait for the rate limit, pass the breaker, call, map, validate."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from taskexec.contract.protocol import DeferIn, Job
from taskexec.contract.validation import validate_instance
from taskexec.core.config import Settings, get_settings
from taskexec.core.constants import CELERY_TASK_EXECUTE, Pool, Status, TaskErrorCode, TaskType
from taskexec.core.exceptions import Conflict, DestinationNotAllowed, ValidationFailed
from taskexec.core.mapping import MappingError, Response, apply, needs_json
from taskexec.core.netpolicy import check_url
from taskexec.observability import metrics
from workers.base import ExecuteTask, Outcome, worker_id
from workers.integration.auth import Authenticator
from workers.integration.breaker import CircuitBreaker
from workers.integration.failure import CallFailure
from workers.integration.gate import admit
from workers.integration.http import Reply, SessionPool, classify
from workers.integration.ratelimit import RateLimiter, rate_for
from workers.integration.redact import Redactor
from workers.integration.request import Call, guarded, prepare
from workers.integration.secrets import SecretResolver

log = logging.getLogger(__name__)
E = TaskErrorCode
_pool: SessionPool | None = None
# A breaker check older than this (the attempt waited for a rate-limit token) is asked again before the call.
FRESH_CHECK_S = 0.05


def session_pool(settings: Settings) -> SessionPool:
    global _pool
    if _pool is None:
        _pool = SessionPool(settings.integration_concurrency, allowed=settings.integration_allowed,
                            max_redirects=settings.integration_max_redirects)
    return _pool


@dataclass
class Deferred(Outcome):
    """The target's rate limit is exhausted: re-queue the task after `delay_s` (not a failure, not a retry)."""

    delay_s: float = 0.0


class Attempt:
    """Everything one attempt needs; `run()` returns its Outcome and never raises for bad input."""

    def __init__(self, job: Job, settings: Settings) -> None:
        self.job = job
        self.settings = settings
        self.cfg: dict[str, Any] = job.definition.execution_config
        self.redactor = Redactor()
        self.secret = SecretResolver(settings, self.redactor)
        self.pool = session_pool(settings)
        self.meta: dict[str, Any] = {"executionEnvironment": {"pool": Pool.INTEGRATION.value, "worker": worker_id()}}

    def run(self) -> Outcome:
        try:
            return self._run()
        except CallFailure as f:
            return self._failed(f)
        except Exception as exc:  # our own bug: report without the exception text (it may carry a URL)
            log.error("integration attempt crashed", extra={"taskId": self.job.task.id,
                                                            "error": type(exc).__name__})
            return Outcome.failed(E.INTEGRATION_ERROR.value, f"executor error: {type(exc).__name__}",
                                  metadata=self.meta, retry=True)

    def _run(self) -> Outcome:
        call = prepare(self.job, self.settings, self.secret)
        shown = self.redactor.url(call.request.url)  # messages name the endpoint without its query
        self.meta.update({"endpoint": shown, "method": call.request.method, "callKind": call.kind,
                          "targetHost": call.host, "idempotencyKey": call.request.headers["Idempotency-Key"]})
        if call.request.guarded:  # refused before any rate-limit token, breaker slot or secret is spent on it;
            self._check_destination(call, shown)  # the connection checks again (and pins the address it checked)
        breaker, limiter = CircuitBreaker(self.settings), RateLimiter(self.settings)
        count, window = rate_for(call.host, self.cfg, self.settings)
        first = admit(breaker, limiter, call.host, count, window)  # one round trip: the circuit, then a token
        look = first.look
        if look.open_ms:  # fail fast, before waiting for (or spending) a rate-limit token
            metrics.record_integration_request(call.host, E.CIRCUIT_OPEN.value)
            raise self._circuit_open(call, shown, look.open_ms)
        waited = time.monotonic()
        wait = limiter.acquire(call.host, count, window, first=first.token)
        if wait > 0:
            self.meta["rateLimit"] = {"limit": count, "windowSeconds": window, "deferredSeconds": round(wait, 3)}
            return Deferred(Status.PENDING.value, metadata=self.meta, delay_s=wait)
        # A clean, closed circuit seen just now needs no permit (closed admits every call); after a wait for a
        # rate-limit token, or with failures counted, ask for one: it may have opened, or this is its trial.
        clean = look.clean and time.monotonic() - waited < FRESH_CHECK_S
        if not clean:
            permit = breaker.acquire(call.host, int(sum(call.timeout) * 1000) + 5000)
            if not permit.allowed:
                raise self._circuit_open(call, shown, permit.wait_ms)
        started = time.monotonic()
        try:
            reply = self._send(call, shown)
        except CallFailure as f:
            self._observe(breaker, call.host, ok=not f.breaker, outcome=f.code.value, started=started, clean=clean)
            raise
        failure = classify(reply, shown, self.redactor.text(reply.text()[:1000]) if reply.status >= 400 else "")
        self._observe(breaker, call.host, ok=failure is None or not failure.breaker,
                      outcome="success" if failure is None else failure.code.value, started=started, clean=clean)
        if failure is not None:
            raise failure
        return self._complete(reply)

    def _check_destination(self, call: Call, shown: str) -> None:
        try:
            check_url(call.request.url, self.settings.integration_allowed)
        except DestinationNotAllowed as exc:
            metrics.record_integration_request(call.host, E.DESTINATION_NOT_ALLOWED.value)
            log.warning("integration call refused: destination not allowed",
                        extra={"taskId": self.job.task.id, "host": exc.host, "address": exc.address,
                               "reason": exc.reason})
            raise CallFailure(E.DESTINATION_NOT_ALLOWED,
                              f"{shown}: {exc}; integration calls reach public addresses only "
                              "(TEL_INTEGRATION_ALLOWED_NETWORKS opens ranges)",
                              details={"host": exc.host, "reason": exc.reason}) from None
        except OSError:
            pass  # does not resolve (now): the call itself reports CONNECTION_ERROR

    @staticmethod
    def _observe(breaker: CircuitBreaker, host: str, *, ok: bool, outcome: str, started: float,
                 clean: bool) -> None:
        """Feed the breaker (a success on a clean circuit changes nothing) and the metrics with one result."""
        state = "closed" if ok and clean else breaker.record(host, ok=ok)
        metrics.record_integration_request(host, outcome, time.monotonic() - started)
        if state in ("closed", "open", "half_open"):
            metrics.set_circuit_state(host, state)

    @staticmethod
    def _circuit_open(call: Call, shown: str, wait_ms: int) -> CallFailure:
        return CallFailure(E.CIRCUIT_OPEN, f"circuit open for {call.host}: failing fast without calling {shown}",
                           retryable=True, details={"host": call.host}, retry_after_ms=wait_ms)

    def _send(self, call: Call, shown: str) -> Reply:
        auth = Authenticator(self.cfg.get("auth"), self.secret, self.redactor, self.pool, call.timeout)
        guarded(lambda: auth.apply(call.request), "auth")
        self.meta["endpoint"] = self.redactor.url(call.request.url, call.request.params)
        reply = self.pool.send(call.request, call.timeout, self.settings.integration_max_response_bytes, shown)
        if reply.status == 401 and guarded(lambda: auth.refresh(call.request), "auth"):
            self.meta["tokenRefreshed"] = True
            reply = self.pool.send(call.request, call.timeout, self.settings.integration_max_response_bytes, shown)
        self.meta.update({"httpStatus": reply.status, "responseTimeMs": reply.elapsed_ms})
        if reply.redirects:
            self.meta["redirects"] = reply.redirects
        return reply

    def _complete(self, reply: Reply) -> Outcome:
        mapping = self.cfg.get("responseMapping")
        try:
            body, is_json = (json.loads(reply.content), True) if reply.content.strip() else (None, True)
        except ValueError:
            body, is_json = reply.text(), False
        ctype = next((v for k, v in reply.headers.items() if k.lower() == "content-type"), "")
        try:
            output = apply(mapping, Response(body, is_json, reply.status, reply.headers))
        except MappingError as exc:
            reason = "RESPONSE_NOT_JSON" if mapping is not None and needs_json(mapping) and not is_json else "MAPPING"
            raise CallFailure(E.INTEGRATION_ERROR, str(exc),
                              details={"reason": reason, "contentType": ctype, "httpStatus": reply.status}) from None
        output = self.redactor.deep(output)
        schema = self.job.definition.output_schema
        if schema:
            try:
                validate_instance(schema, output, "output")
            except ValidationFailed as exc:
                raise CallFailure(E.OUTPUT_VALIDATION_ERROR, f"mapped {exc.message}",
                                  details={"reason": "OUTPUT_SCHEMA", "errors": exc.details}) from None
        return Outcome(Status.COMPLETED.value, output=output, metadata=self.meta)

    def _failed(self, f: CallFailure) -> Outcome:
        message = self.redactor.text(f.message)
        details = self.redactor.deep(f.details) or None
        return Outcome.failed(f.code.value, message, details, metadata=self.meta, retry=f.retryable)


class IntegrationTask(ExecuteTask):
    task_type = TaskType.INTEGRATION
    name = CELERY_TASK_EXECUTE[TaskType.INTEGRATION]

    def execute(self, job: Job) -> Outcome:
        return Attempt(job, get_settings()).run()

    def _report(self, task_id: str, attempt: int, outcome: Outcome, ctx: dict[str, Any]) -> None:
        if isinstance(outcome, Deferred):
            body = DeferIn(attempt=attempt, delay_ms=int(outcome.delay_s * 1000), reason="rate limit of the target")
            try:
                self.router.defer(task_id, body)
            except Conflict as exc:
                log.info("deferral not recorded", extra={**ctx, "reason": exc.message})
            return
        super()._report(task_id, attempt, outcome, ctx)
