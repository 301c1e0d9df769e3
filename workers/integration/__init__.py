"""The INTEGRATION pool: Integration Service calls and direct HTTP requests that survive the outside world.

Modules: `task` (the Celery task and the flow of one attempt), `request` (templates -> a call),
`auth` (none, API key, bearer, basic, OAuth2 client credentials), `secrets` (Vault KV v2 / files),
`http` (per-host sessions, timeouts, response classification), `breaker` and `ratelimit`
(per-host state in Redis, shared by every worker; `local_state` when told to keep it per process),
`gate` (both asked in one round trip before a call),
`redact` (secret values never leave the worker).
"""

from workers.integration.task import IntegrationTask

__all__ = ["IntegrationTask"]
